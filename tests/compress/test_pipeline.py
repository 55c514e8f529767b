"""`compress run`'s work folder: the saved run config guards finished work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import compress.pipeline as pipeline
from compress.pipeline import RunConfig, run_pipeline
from compress.report import teacher_folder
from teacher.errors import FacedistillError
from teacher.train import TeacherTrainConfig


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


def test_teacher_ensemble_and_self_training_reach_the_teacher_stages(tmp_path, monkeypatch):
    """--teacher-ensemble sets the teacher's members; --self-train adds a round-2 teacher (labeled + round-1
    labels) whose relabeling is what the students and the report get."""
    calls: dict[str, list] = {"train": [], "label": []}
    monkeypatch.setattr(pipeline, "build_corpus", lambda out, *, config: None)

    def train_teacher(labeled, out, *, config, eval_dir=None, pseudo_dir=None):
        calls["train"].append((Path(out).name, config, pseudo_dir))

    class _Teacher:
        identity = "t"

        @staticmethod
        def load(path):
            return _Teacher()

    def distill(pseudo, out, **kwargs):
        calls["distill"] = Path(pseudo).name
        raise _Stop

    monkeypatch.setattr(pipeline, "train_teacher", train_teacher)
    monkeypatch.setattr(pipeline, "Teacher", _Teacher)
    monkeypatch.setattr(
        pipeline, "pseudo_label", lambda src, out, **kw: calls["label"].append(Path(out).name)
    )
    monkeypatch.setattr(pipeline, "evaluate_teacher", lambda teacher, split: {})
    monkeypatch.setattr(pipeline, "_pseudo_label_quality", lambda pseudo, teacher: {})
    monkeypatch.setattr(pipeline, "distill", distill)
    config = RunConfig.quick_config(teacher_members=3, self_train_epochs=4, teacher_fps=60)
    with pytest.raises(_Stop):
        run_pipeline(tmp_path, tmp_path / "reports", config=config)
    (r1, c1, p1), (r2, c2, p2) = calls["train"]
    assert (r1, p1, r2, Path(p2).name) == ("teacher", None, "teacher2", "pseudo")
    assert c1.model.members == c2.model.members == 3
    assert c1.fps == c2.fps == 60 and c1.max_frames == 2 * TeacherTrainConfig().max_frames  # --teacher-fps
    assert (c2.epochs, c2.augment_variants) == (4, 1) and c1.epochs != 4
    assert calls["label"] == ["pseudo", "pseudo2"] and calls["distill"] == "pseudo2"
    assert (tmp_path / "teacher2" / "metrics.json").is_file()  # the evaluated teacher is round 2
    assert teacher_folder(tmp_path).name == "teacher2"  # and the report reads it

    calls.update(train=[], label=[])
    plain = tmp_path / "plain"
    with pytest.raises(_Stop):
        run_pipeline(plain, plain / "reports", config=RunConfig.quick_config())
    assert [r for r, _, _ in calls["train"]] == ["teacher"] and calls["label"] == ["pseudo"]
    assert calls["train"][0][1].model.members == 1 and teacher_folder(plain).name == "teacher"
    assert calls["train"][0][1].fps == 0
    with pytest.raises(FacedistillError, match="teacher_fps"):
        RunConfig(teacher_fps=25)
    with pytest.raises(FacedistillError, match="teacher_members"):
        RunConfig(teacher_members=0)
