"""`compress run`'s work folder: the saved run config guards finished work."""

from __future__ import annotations

import json

import pytest

import compress.pipeline as pipeline
from compress.pipeline import RunConfig, run_pipeline
from teacher.errors import FacedistillError


class _Stop(Exception):
    """Raised by the stubbed corpus stage: the run got past the run-config check."""


def _stub_corpus(monkeypatch):
    seen = {}

    def build_corpus(out, *, config):
        seen["config"] = config
        raise _Stop

    monkeypatch.setattr(pipeline, "build_corpus", build_corpus)
    return seen


def test_run_config_saved_before_an_option_existed_still_matches(tmp_path, monkeypatch):
    seen = _stub_corpus(monkeypatch)
    config = RunConfig.quick_config()
    saved = config.to_dict()
    del saved["labeled_languages"]  # a folder made before the option existed
    (tmp_path / "run_config.json").write_text(json.dumps(saved))
    with pytest.raises(_Stop):
        run_pipeline(tmp_path, tmp_path / "reports", config=config)
    assert seen["config"].labeled.languages == ("en-us", "de", "es", "nl", "cs")  # the corpus default
    with pytest.raises(FacedistillError, match="another run config"):
        run_pipeline(tmp_path, tmp_path / "reports", config=RunConfig.quick_config(labeled_languages=("es",)))


def test_labeled_languages_reach_the_corpus(tmp_path, monkeypatch):
    seen = _stub_corpus(monkeypatch)
    with pytest.raises(_Stop):
        run_pipeline(
            tmp_path, tmp_path / "reports", config=RunConfig.quick_config(labeled_languages=["es", "cs"])
        )
    assert seen["config"].labeled.languages == ("es", "cs")
    assert json.loads((tmp_path / "run_config.json").read_text())["labeled_languages"] == ["es", "cs"]


def test_pruning_settings_must_name_distilled_presets():
    with pytest.raises(FacedistillError, match="not distilled"):
        RunConfig(prune_steps={"huge": 10})


def test_a_bad_language_is_refused_before_the_run_config_is_saved(tmp_path, monkeypatch):
    _stub_corpus(monkeypatch)
    with pytest.raises(FacedistillError, match="language 'xx' unsupported"):
        run_pipeline(tmp_path, tmp_path / "reports", config=RunConfig.quick_config(labeled_languages=["xx"]))
    # nothing saved, so the corrected rerun is not refused as "another config"
    assert not (tmp_path / "run_config.json").exists()
    with pytest.raises(_Stop):
        run_pipeline(tmp_path, tmp_path / "reports", config=RunConfig.quick_config(labeled_languages=["es"]))
