"""Pruning: fewer channels, same window, reloads from config + state dict, fine-tune recovers the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_models import speechlike, tiny_student, toy_split

from compress.prune import PruneConfig, PruneError, prune
from students.model import count_params, load_student, save_student


def test_pruned_student_round_trips_through_config_and_state_dict(tmp_path):
    model = tiny_student(frontend=(8, 16, 16))
    windows = speechlike(64, model.window_samples, 0)
    pruned = prune(model, windows, config=PruneConfig(ratio=0.5, round_to=4, finetune_steps=5))
    assert pruned.config.frontend_channels == (4, 8, 8) and pruned.config.head_hidden == (8,)
    assert count_params(pruned) < 0.4 * count_params(model)
    assert pruned.window_samples == model.window_samples and pruned.lookahead_ms == model.lookahead_ms
    assert pruned.head[0].kernel_size == model.head[0].kernel_size  # the window-spanning kernel is kept
    assert pruned.out.out_channels == 4
    save_student(tmp_path / "p.pt", pruned)
    reloaded = load_student(tmp_path / "p.pt")
    x = torch.from_numpy(speechlike(8, model.window_samples, 1))
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned(x))


def test_finetune_pulls_pruned_outputs_back_to_the_unpruned_model():
    model = tiny_student(frontend=(8, 16, 16))
    windows = speechlike(64, model.window_samples, 0)
    x = torch.from_numpy(speechlike(32, model.window_samples, 1))

    def drift(steps: int) -> float:
        pruned = prune(
            model, windows, config=PruneConfig(ratio=0.5, round_to=4, finetune_steps=steps, finetune_lr=3e-3)
        )
        with torch.no_grad():
            return float(torch.mean((pruned(x) - model(x)) ** 2))

    assert drift(60) < 0.5 * drift(0)


def test_taylor_needs_labels_and_runs_with_them():
    model = tiny_student(frontend=(8, 16, 16))
    windows = speechlike(32, model.window_samples, 0)
    config = PruneConfig(ratio=0.25, importance="taylor", round_to=4, finetune_steps=2, iterative_steps=2)
    with pytest.raises(PruneError, match="labels"):
        prune(model, windows, config=config)
    labels = np.random.default_rng(0).uniform(size=(32, 4)).astype(np.float32)
    pruned = prune(model, windows, config=config, labels=labels)
    assert count_params(pruned) < count_params(model)
    with pytest.raises(PruneError):
        PruneConfig(ratio=1.0)


def test_logmel_filterbank_is_never_pruned(tmp_path):
    model = tiny_student(frontend=(16,), logmel=True)
    windows = speechlike(32, model.window_samples, 0)
    pruned = prune(model, windows, config=PruneConfig(ratio=0.5, round_to=4, finetune_steps=3))
    assert pruned.config.frontend_channels == (8,) and pruned.config.logmel_bands == 16
    for name in ("dft", "mel"):  # the fixed filters are untouched: same shapes, same values, still fixed
        before, after = getattr(model.logmel, name).weight, getattr(pruned.logmel, name).weight
        assert torch.equal(before, after) and not after.requires_grad
    save_student(tmp_path / "p.pt", pruned)
    x = torch.from_numpy(speechlike(4, model.window_samples, 1))
    with torch.no_grad():
        assert torch.equal(load_student(tmp_path / "p.pt")(x), pruned(x))


def test_run_pipeline_pruned_child_is_reused_only_with_the_same_parent_and_settings(tmp_path):
    from compress.pipeline import RunConfig, _pruned

    model = tiny_student(frontend=(8, 16, 16))
    ckpt = tmp_path / "student.pt"
    save_student(ckpt, model)
    split = toy_split(model)
    config = RunConfig.quick_config()

    def made(ratio=0.5, steps=5, seed=0):
        return _pruned(ckpt, ratio, split, RunConfig.quick_config(seed=seed), steps).stat().st_mtime_ns

    path = _pruned(ckpt, 0.5, split, config, 5)
    assert path.name == "student-pruned50.pt"
    stamp = path.stat().st_mtime_ns
    assert made() == stamp  # same parent and settings: reused
    assert made(seed=1) != stamp  # other windows: made again
    stamp = path.stat().st_mtime_ns
    save_student(ckpt, tiny_student(seed=1, frontend=(8, 16, 16)))  # a new parent: made again
    assert made() != stamp


def test_prune_config_matches_checkpoints_saved_before_an_option_existed():
    config = PruneConfig(ratio=0.3, round_to=4, finetune_steps=500)
    saved = config.to_dict()
    del saved["label_weight"]  # as a checkpoint pruned before an option (at its default here) existed
    assert config.matches(saved)
    assert not PruneConfig(ratio=0.3, round_to=4, finetune_steps=500, label_weight=0.5).matches(saved)
    assert (
        not config.matches({**saved, "ratio": 0.5})
        and not config.matches({"bogus": 1})
        and not config.matches(None)
    )
    with pytest.raises(PruneError, match="label_weight"):
        PruneConfig(label_weight=-1.0)
