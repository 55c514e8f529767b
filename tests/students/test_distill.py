"""Distillation: both stages train, cards say what was made from what, reruns resume and skip finished work."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import write_dataset  # the synthetic-data helper beside this file

from students.data import ChunkSampler, evaluate_student, load_split
from students.distill import (
    DistillConfig,
    DistillError,
    align_features,
    distill,
    resolve_device,
    spec_band_eq,
    spec_band_mask,
    train_student,
)
from students.model import LOGMEL_SCALE, Student, load_student, preset
from teacher.constants import ANCHOR_QUANTUM

torch.set_num_threads(1)

FAST = {"batch_size": 4, "chunk_frames": 15, "checkpoint_every": 10, "lr": 3e-3, "labeled_weight": 0.0}


def test_chunks_carry_exact_anchors_and_context(synthetic) -> None:
    split = load_split(synthetic["pseudo"])
    sampler = ChunkSampler(split, frames=15, left=4096, right=1024)
    batch = sampler.batch(6, np.random.default_rng(0))
    assert batch.audio.shape == (6, sampler.length) and sampler.length % ANCHOR_QUANTUM == 0
    assert bool((batch.anchors % ANCHOR_QUANTUM == 0).all())
    assert int(batch.anchors.min()) >= 4096 and int(batch.anchors.max()) + 1024 <= sampler.length
    assert batch.mask.any() and float(batch.targets[~batch.mask].abs().sum()) == 0.0
    with torch.no_grad():
        frames = Student(preset("tiny", future_ms=64.0)).forward_full(batch.audio, batch.anchors, pad=False)
    assert frames.shape == (6, 15, 52)


def test_align_features_matches_receptive_field_centres() -> None:
    t = torch.arange(20.0).view(1, 1, 20)  # teacher position q: centre 64 q + 64 * 7 / 2
    s = torch.arange(22.0).view(1, 1, 22) + 1  # student RF 64 * 3: its position q has centre 64 q + 96
    a, b = align_features(s, 64 * 3, t, 64 * 7)
    # student centre 64 q + 96 == teacher centre 64 q' + 224  <=>  q' = q - 2
    assert torch.equal(a - 1 - 2, b) and a.shape[-1] == 20


def test_distill_two_stages_resume_and_skip(synthetic, tmp_path) -> None:
    config = DistillConfig(
        presets=("tiny", "edge"), stage1="tiny", steps={"tiny": 60, "edge": 20}, feature_weight=0.1, **FAST
    )
    out = tmp_path / "students"
    cards = distill(synthetic["pseudo"], out, config=config, test_dir=synthetic["test"], progress=False)
    assert set(cards) == {"tiny", "edge"}
    tiny = cards["tiny"]
    assert tiny["stage"] == 1 and cards["edge"]["stage"] == 2
    assert cards["edge"]["parent"]["feature_teacher"] == "tiny"
    assert cards["edge"]["lookahead_ms"] == 32.0 and "feature" in cards["edge"]["training"]["last_losses"]
    on_disk = json.loads((out / "tiny" / "card.json").read_text())
    assert (
        on_disk["distill_config"] == config.to_dict()
        and len(on_disk["parent"]["pseudo_labels_manifest_sha256"]) == 64
    )
    # the synthetic curves are learnable: 60 tiny steps already beat predicting the mean
    assert tiny["test"]["metrics"]["mse_ratio_to_mean"] < 0.9
    model = load_student(out / "tiny" / "student.pt")
    again = evaluate_student(model, load_split(synthetic["test"], field="truth"), mean_vector=None)
    assert np.isclose(again["mse"], tiny["test"]["metrics"]["mse"], rtol=1e-5)
    assert not (out / "tiny" / "checkpoint.pt").exists()
    before = (out / "tiny" / "student.pt").stat().st_mtime_ns
    distill(synthetic["pseudo"], out, config=config, progress=False)  # finished presets are skipped
    assert (out / "tiny" / "student.pt").stat().st_mtime_ns == before
    # a card written before an option existed (here: the closure hinge) still matches at that option's default
    for name in ("tiny", "edge"):
        card = json.loads((out / name / "card.json").read_text())
        del card["distill_config"]["closure_hinge_weight"], card["distill_config"]["closure_margin"]
        (out / name / "card.json").write_text(json.dumps(card))
    distill(synthetic["pseudo"], out, config=config, progress=False)
    assert (out / "tiny" / "student.pt").stat().st_mtime_ns == before
    assert not config.matches({**config.to_dict(), "closure_hinge_weight": 0.1})
    assert not config.matches({**config.to_dict(), "no_such_option": 1}) and not config.matches(None)
    with pytest.raises(DistillError, match="another config"):
        distill(
            synthetic["pseudo"],
            out,
            config=DistillConfig.from_dict({**config.to_dict(), "seed": 1}),
            progress=False,
        )


def _dying_at(call: int):
    """A ``ChunkSampler.batch`` that raises KeyboardInterrupt (a kill) on its ``call``-th call."""
    original = ChunkSampler.batch
    calls = {"n": 0}

    def dying(self, size, rng):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(self, size, rng)

    return dying


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_interrupted_training_resumes_to_the_same_weights(
    synthetic, tmp_path, monkeypatch, ema_decay
) -> None:
    """With weight averaging on, the average is checkpointed too: the resumed student is the same average."""
    split = load_split(synthetic["pseudo"])
    settings = DistillConfig(**{**FAST, "ema_decay": ema_decay})
    cfg = preset("edge")
    ref, _ = train_student(cfg, split, settings=settings, steps=25, progress=False)

    original = ChunkSampler.batch
    monkeypatch.setattr(ChunkSampler, "batch", _dying_at(16))  # after the step-10 checkpoint, before step 20
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg, split, settings=settings, steps=25, checkpoint=ckpt, progress=False)
    monkeypatch.setattr(ChunkSampler, "batch", original)
    resumed, summary = train_student(cfg, split, settings=settings, steps=25, checkpoint=ckpt, progress=False)
    assert summary["steps_this_run"] == 15
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)


def _edge_with_and_without(synthetic, **option):
    """``edge`` trained 25 steps with FAST settings, without and with ``option`` (same batches, same init)."""
    split = load_split(synthetic["pseudo"])
    plain, _ = train_student(preset("edge"), split, settings=DistillConfig(**FAST), steps=25, progress=False)
    settings = DistillConfig(**{**FAST, **option})
    changed, summary = train_student(preset("edge"), split, settings=settings, steps=25, progress=False)
    return plain, changed, summary


def test_weight_average_is_the_saved_student(synthetic) -> None:
    plain, averaged, summary = _edge_with_and_without(synthetic, ema_decay=0.9)
    assert summary["ema_decay"] == 0.9
    # same batches and init: the saved weights are the average, not the last iterate
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(plain.state_dict().values(), averaged.state_dict().values())
    ]
    assert max(diffs) > 1e-4
    with pytest.raises(DistillError, match="ema_decay"):
        DistillConfig(ema_decay=1.0)


def test_weight_decay_shrinks_the_trained_weights(synthetic) -> None:
    plain, decayed, _ = _edge_with_and_without(synthetic, weight_decay=5.0)

    def norm(m: torch.nn.Module) -> float:
        return sum(p.square().sum().item() for p in m.parameters() if p.requires_grad)

    assert norm(decayed) < 0.99 * norm(plain)  # same batches and init: only the decay differs
    with pytest.raises(DistillError, match="weights and lr"):
        DistillConfig(weight_decay=-0.1)


@pytest.mark.parametrize(
    ("option", "value", "recorded", "bad"),
    [("freq_warp", 0.1, 0.1, 0.5), ("freq_masks", 2, [2, 8], -1), ("freq_eq_db", 6.0, 6.0, -1.0)],
)
def test_spectral_augmentation_trains_logmel_students_only_and_leaves_nothing_behind(
    synthetic, option, value, recorded, bad
) -> None:
    split = load_split(synthetic["pseudo"])
    cfg = preset("tiny-mel", context_channels=(8, 8), head_bottleneck=8, head_hidden=(8,))
    off = {**FAST, "freq_warp": 0.0, "freq_masks": 0}
    plain, _ = train_student(cfg, split, settings=DistillConfig(**off), steps=6, progress=False)
    settings = DistillConfig(**{**off, option: value})
    augmented, summary = train_student(cfg, split, settings=settings, steps=6, progress=False)
    assert summary[option] == recorded
    assert augmented.logmel.warp is None and augmented.logmel.band_mask is None
    assert augmented.logmel.band_offset is None
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(plain.state_dict().values(), augmented.state_dict().values())
    ]
    assert max(diffs) > 1e-5  # same batches, same init: only the augmentation differs
    _, wave = train_student(preset("edge"), split, settings=settings, steps=2, progress=False)
    assert wave[option] == "not applied (waveform front end)"
    with pytest.raises(DistillError, match=option):
        DistillConfig(**{option: bad})


def test_spec_band_masks_are_runs_of_at_most_the_width():
    mask = spec_band_mask(np.random.default_rng(0), 200, 64, 1, 8).numpy()
    widths = mask.sum(axis=1)
    assert widths.max() == 8 and widths.min() == 0
    for row in mask[widths > 0]:  # one contiguous run per row
        on = np.flatnonzero(row)
        assert on[-1] - on[0] + 1 == len(on)
    # a masked band reads its mean over the chunk, the others are untouched
    student = Student(preset("tiny-mel"))
    audio = torch.randn(2, 8000)
    plain = student.logmel(audio)
    student.logmel.band_mask = torch.from_numpy(mask[:2] | np.eye(64, dtype=bool)[[3, 40]])
    out = student.logmel(audio)
    student.logmel.band_mask = None
    rows, bands = np.nonzero(mask[:2] | np.eye(64, dtype=bool)[[3, 40]])
    for r, b in zip(rows, bands):
        assert torch.allclose(out[r, b], plain[r, b].mean().expand_as(out[r, b]))
    keep = ~(mask[:2] | np.eye(64, dtype=bool)[[3, 40]])
    assert torch.equal(out[torch.from_numpy(keep)], plain[torch.from_numpy(keep)])


def test_random_equalizer_is_smooth_bounded_and_shifts_log_power_only():
    offset = spec_band_eq(np.random.default_rng(0), 500, 64, 12.0).numpy()
    db = offset * 10 / np.log(10.0)
    assert offset.shape == (500, 64) and offset.dtype == np.float32
    assert 8.0 < np.abs(db).max() <= 12.0 + 1e-4  # bounded by 12 dB, and nearly reached
    assert np.abs(np.diff(db, axis=1)).max() < 12.0 * np.pi * 3 / 64  # smooth: slope of the highest component
    assert np.abs(db.mean(axis=0)).max() < 1.5  # zero-mean over draws
    # the front end adds it to every band's log power, frame by frame
    student = Student(preset("tiny-mel"))
    audio = torch.randn(2, 8000)
    plain = student.logmel(audio)
    student.logmel.band_offset = torch.from_numpy(offset[:2])
    out = student.logmel(audio)
    student.logmel.band_offset = None
    shift = (out - plain) / LOGMEL_SCALE
    assert torch.allclose(shift, torch.from_numpy(offset[:2]).unsqueeze(-1).expand_as(shift), atol=1e-4)


def test_logmel_only_options_do_not_invalidate_waveform_students():
    base = DistillConfig()
    masked = DistillConfig(freq_masks=2, freq_warp=0.1)
    assert masked.matches_preset("small", base.to_dict())
    assert masked.matches_preset("edge", base.to_dict())
    assert not masked.matches_preset("tiny-mel", base.to_dict())
    assert base.matches_preset("tiny-mel", base.to_dict())


def test_configs_saved_before_the_frequency_masks_read_as_trained_without_them():
    assert DistillConfig().freq_masks == 2 and DistillConfig().version == 2
    saved = {k: v for k, v in DistillConfig().to_dict().items() if k not in ("freq_masks", "freq_mask_bands")}
    v1 = DistillConfig.from_dict({**saved, "version": 1})
    assert v1.version == 2 and v1.freq_masks == 0  # a version-1 card trained without masks
    assert DistillConfig.from_dict({**saved, "version": 1, "freq_masks": 3}).freq_masks == 3
    assert DistillConfig.from_dict({"seed": 1}).freq_masks == 2  # a user's config file gets the default
    assert not DistillConfig().matches_preset(
        "tiny-mel", {**saved, "version": 1}
    )  # so a v1 tiny-mel retrains
    assert DistillConfig().matches_preset("small", {**saved, "version": 1})  # and a v1 small does not
    with pytest.raises(DistillError, match="unsupported version"):
        DistillConfig.from_dict({**saved, "version": 3})


def test_labeled_loss_and_bad_configs(synthetic, tmp_path) -> None:
    config = DistillConfig(
        presets=("edge",), stage1="edge", steps={"edge": 10}, **{**FAST, "labeled_weight": 0.5}
    )
    cards = distill(
        synthetic["pseudo"], tmp_path / "a", config=config, labeled_dir=synthetic["labeled"], progress=False
    )
    assert "labeled" in cards["edge"]["training"]["last_losses"]
    with pytest.raises(DistillError, match="labeled split"):
        distill(synthetic["pseudo"], tmp_path / "b", config=config, progress=False)
    with pytest.raises(DistillError, match="stage-1"):
        distill(
            synthetic["pseudo"],
            tmp_path / "c",
            config=DistillConfig(presets=("edge",), **FAST),
            progress=False,
        )
    with pytest.raises(DistillError, match="unknown preset"):
        DistillConfig(presets=("huge",))
    assert DistillConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_stage2_warm_starts_from_a_same_shaped_teacher(synthetic) -> None:
    split = load_split(synthetic["pseudo"])
    torch.manual_seed(5)
    teacher = Student(preset("tiny")).eval().requires_grad_(False)
    shifted = preset(
        "tiny", past_ms=320.0, future_ms=192.0
    )  # same layers, window moved: like realtime vs small
    settings = DistillConfig(**{**FAST, "lr": 0.0})
    student, summary = train_student(
        shifted, split, settings=settings, steps=2, teacher=teacher, progress=False
    )
    assert summary["warm_start"] == "exact"
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, student.state_dict()[key]), key
    _, cold = train_student(
        preset("edge"), split, settings=settings, steps=2, teacher=teacher, progress=False
    )
    assert cold["warm_start"] is None


def test_zero_out_init_starts_a_cold_student_at_the_target_mean_and_spares_a_warm_one(synthetic) -> None:
    split = load_split(synthetic["pseudo"])
    settings = DistillConfig(**{**FAST, "lr": 0.0, "zero_out_init": True})
    student, summary = train_student(preset("edge"), split, settings=settings, steps=2, progress=False)
    assert summary["warm_start"] is None and not student.out.weight.any()
    windows = torch.from_numpy(
        np.random.default_rng(0).normal(0, 0.1, (3, student.window_samples)).astype("f4")
    )
    with torch.no_grad():
        out = student(windows)
    mean = torch.from_numpy(np.clip(split.target_mean(), 0.01, 0.99))
    assert torch.allclose(out, mean.expand_as(out), atol=1e-6)  # any audio: the target mean
    default, _ = train_student(
        preset("edge"), split, settings=DistillConfig(**{**FAST, "lr": 0.0}), steps=2, progress=False
    )
    assert default.out.weight.any()
    torch.manual_seed(5)
    teacher = Student(preset("tiny")).eval().requires_grad_(False)
    warm, summary = train_student(
        preset("tiny", past_ms=320.0, future_ms=192.0), split, settings=settings, steps=2, teacher=teacher,
        progress=False,
    )  # fmt: skip
    assert summary["warm_start"] == "exact" and torch.equal(warm.out.weight, teacher.out.weight)


def test_a_dead_head_restarts_with_zero_output_weights_and_resumes_as_restarted(
    synthetic, tmp_path, monkeypatch
) -> None:
    import students.distill as sd

    split = load_split(synthetic["pseudo"])
    cfg = preset("edge", head_hidden=(8,))
    kills = []
    original = sd._init_output_bias

    def kill_first_head(student, mean):  # the first init's head never fires: a dead head from step 1
        original(student, mean)
        if not kills:
            kills.append(1)
            with torch.no_grad():
                student.head[0].bias.fill_(-1e4)

    monkeypatch.setattr(sd, "_init_output_bias", kill_first_head)
    monkeypatch.setattr(sd, "DEAD_HEAD_STEPS", 3)
    ckpt = tmp_path / "progress.pt"
    saved = []
    real_save = sd.atomic_torch_save
    monkeypatch.setattr(
        sd, "atomic_torch_save", lambda path, obj: (saved.append(copy.deepcopy(obj)), real_save(path, obj))
    )
    settings = DistillConfig(**{**FAST, "checkpoint_every": 4})
    student, summary = train_student(cfg, split, settings=settings, steps=8, checkpoint=ckpt, progress=False)
    assert summary["dead_head_restart"] == 3 and summary["steps_this_run"] == 8
    assert student.head[0].bias.max() > -1e3  # the restart is a fresh init, with zero output weights
    assert [s["step"] for s in saved] == [4, 8] and all(s["dead_head_restart"] == 3 for s in saved)
    # killed after step 4 of the restarted run: the resume continues it (no new watch, no second restart)
    real_save(ckpt, saved[0])
    kills.clear()  # a fresh process would kill its first init again; the resume must not start from an init
    resumed, summary2 = train_student(cfg, split, settings=settings, steps=8, checkpoint=ckpt, progress=False)
    assert summary2["dead_head_restart"] == 3 and summary2["steps_this_run"] == 4
    for a, b in zip(student.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # a healthy cold student is not restarted
    _, healthy = train_student(cfg, split, settings=settings, steps=8, progress=False)
    assert "dead_head_restart" not in healthy


def test_closure_weight_scales_the_closure_channel_error():
    from students.data import Batch
    from students.distill import curve_loss

    targets = torch.zeros(1, 4, 3)
    pred = torch.zeros(1, 4, 3)
    pred[..., 1] = 0.5  # error on channel 1 only, constant over time (no velocity error)
    batch = Batch(audio=torch.zeros(1, 10), anchors=torch.zeros(1, 4, dtype=torch.long), targets=targets,
                  mask=torch.ones(1, 4, dtype=torch.bool))  # fmt: skip
    plain, _ = curve_loss(pred, batch, 1.0)
    assert plain.item() == pytest.approx(0.25 / 3)
    weighted, _ = curve_loss(pred, batch, 1.0, torch.tensor([1.0, 4.0, 1.0]))
    assert weighted.item() == pytest.approx(0.25 * 4 / 6)
    with pytest.raises(DistillError, match="weights"):
        DistillConfig(closure_weight=-1.0)


def test_closure_hinge_pulls_only_closed_frames_below_threshold_plus_margin():
    from teacher.train import closure_hinge

    targets = torch.tensor([[[0.9], [0.9], [0.2], [0.55], [0.9]]])  # frames 0, 1, 3, 4 close in the target
    pred = torch.tensor([[[0.7], [0.3], [0.0], [0.4], [0.0]]])
    mask = torch.tensor([[True, True, True, True, False]])  # frame 4 is padding: never counted
    # frame 0 clears 0.5 + 0.1; frame 1 falls 0.3 short; frame 2 is open in the target, so its 0.0 costs nothing;
    # frame 3's target (0.55) is below 0.5 + 0.1, so the aim there is the target: 0.15 short
    assert closure_hinge(pred, targets, mask, 0, 0.1, 0.5).item() == pytest.approx((0.3**2 + 0.15**2) / 3)
    assert closure_hinge(pred, targets, mask, 0, 0.0, 0.5).item() == pytest.approx((0.2**2 + 0.1**2) / 3)
    assert closure_hinge(pred, targets * 0, mask, 0, 0.1, 0.5).item() == 0.0
    with pytest.raises(DistillError, match="weights"):
        DistillConfig(closure_hinge_weight=-1.0)


def test_closure_channel_is_the_rigs_mouth_close_only_while_the_hinge_is_on():
    from teacher.constants import ARKIT_52
    from teacher.train import closure_channel

    assert closure_channel(ARKIT_52, 0.01) == list(ARKIT_52).index("mouthClose")
    assert closure_channel(ARKIT_52, 0.0) is None  # hinge off
    assert closure_channel(["jawOpen", "brow"], 1.0) is None  # a rig without a closure channel


def test_cli_trains_a_preset_on_mulaw_input(synthetic, tmp_path) -> None:
    from compress.cli import main

    settings = json.dumps({**FAST, "stage1": "edge", "steps": {"edge": 10}})
    rc = main(
        ["distill", "--pseudo", str(synthetic["pseudo"]), "--presets", "edge", "--mulaw", "edge"]
        + [
            "--config",
            settings,
            "--closure-hinge",
            "0.05",
            "--zero-out-init",
            "--ema",
            "0.9",
            "--weight-decay",
            "0.05",
            "--freq-eq",
            "6",
            "--no-test",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    model = load_student(tmp_path / "edge" / "student.pt")
    assert model.config.input_encoding == "mulaw"
    card = json.loads((tmp_path / "edge" / "card.json").read_text())
    assert card["distill_config"]["overrides"] == {"edge": {"input_encoding": "mulaw"}}
    assert card["distill_config"]["closure_hinge_weight"] == 0.05
    assert card["distill_config"]["zero_out_init"] is True
    assert card["distill_config"]["ema_decay"] == 0.9
    assert card["distill_config"]["weight_decay"] == 0.05 and card["distill_config"]["freq_eq_db"] == 6.0
    assert (
        main(["distill", "--pseudo", str(synthetic["pseudo"]), "--mulaw", "huge", "--out", str(tmp_path)])
        == 2
    )


def test_cli_trains_a_preset_behind_the_logmel_frontend(synthetic, tmp_path) -> None:
    from compress.cli import main

    settings = json.dumps({**FAST, "stage1": "edge", "steps": {"edge": 10}})
    rc = main(
        ["distill", "--pseudo", str(synthetic["pseudo"]), "--presets", "edge", "--logmel", "edge"]
        + ["--config", settings, "--closure-hinge", "0.05", "--freq-warp", "0.1", "--no-test"]
        + ["--out", str(tmp_path)]
    )
    assert rc == 0
    model = load_student(tmp_path / "edge" / "student.pt")
    card = json.loads((tmp_path / "edge" / "card.json").read_text())
    assert card["distill_config"]["freq_warp"] == 0.1 and card["training"]["freq_warp"] == 0.1
    assert model.config.frontend == "logmel" and model.config.frontend_channels == (32,)
    assert model.lookahead_ms == 32.0  # the filterbank reads past audio only: same lookahead as edge
    assert not any(p.requires_grad for p in model.logmel.parameters())
    fresh = Student(model.config)  # the filterbank did not train: it is still the fixed one
    assert all(torch.equal(a, b) for a, b in zip(model.logmel.parameters(), fresh.logmel.parameters()))
    assert (
        main(["distill", "--pseudo", str(synthetic["pseudo"]), "--logmel", "huge", "--out", str(tmp_path)])
        == 2
    )


def test_device_option_refuses_what_it_cannot_honour(synthetic, tmp_path) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DistillError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(DistillError, match="only cpu and cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(DistillError, match="no CUDA device is visible"):
            resolve_device("cuda")
        config = DistillConfig(presets=("edge",), stage1="edge", steps={"edge": 2}, **FAST)
        with pytest.raises(DistillError, match="no CUDA device"):
            distill(synthetic["pseudo"], tmp_path / "x", config=config, progress=False, device="cuda")
        assert not (tmp_path / "x").exists()  # refused before any work
    split = load_split(synthetic["pseudo"])
    batch = ChunkSampler(split, frames=5, left=1024, right=1024).batch(2, np.random.default_rng(0))
    assert batch.to(torch.device("cpu")) is batch
    _, summary = train_student(preset("edge"), split, settings=DistillConfig(**FAST), steps=2, progress=False)
    assert summary["device"].startswith("cpu (")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_cuda_training_matches_cpu_and_resumes_on_the_cpu(synthetic, tmp_path, monkeypatch) -> None:
    """Same batches, same init: a CUDA run's losses track the CPU run's; its checkpoint resumes on the CPU."""
    split = load_split(synthetic["pseudo"])
    settings = DistillConfig(**FAST)
    cfg = preset("edge")
    cpu, s_cpu = train_student(cfg, split, settings=settings, steps=20, progress=False)
    gpu, s_gpu = train_student(cfg, split, settings=settings, steps=20, progress=False, device="cuda")
    assert s_gpu["device"].startswith("cuda:0 (")
    assert next(gpu.parameters()).device.type == "cpu"
    for k in ("recon", "velocity"):
        assert s_gpu["last_losses"][k] == pytest.approx(s_cpu["last_losses"][k], rel=0.05), k
    x = torch.from_numpy(split.audio[0][: gpu.window_samples][None])
    with torch.no_grad():
        torch.testing.assert_close(gpu(x), cpu(x), atol=5e-3, rtol=0)

    original = ChunkSampler.batch
    monkeypatch.setattr(ChunkSampler, "batch", _dying_at(16))  # after the step-10 checkpoint
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg, split, settings=settings, steps=20, checkpoint=ckpt, progress=False, device="cuda")
    monkeypatch.setattr(ChunkSampler, "batch", original)
    resumed, summary = train_student(cfg, split, settings=settings, steps=20, checkpoint=ckpt, progress=False)
    assert summary["steps_this_run"] == 10 and summary["device"].startswith("cpu")
    with torch.no_grad():
        torch.testing.assert_close(resumed(x), cpu(x), atol=5e-3, rtol=0)


def test_adding_a_preset_keeps_the_finished_ones(synthetic, tmp_path) -> None:
    """A card is matched on what trained its own preset: more presets, or another preset's steps, keep it."""
    first = DistillConfig(presets=("edge",), stage1="edge", steps={"edge": 5}, **FAST)
    out = tmp_path / "students"
    distill(synthetic["pseudo"], out, config=first, progress=False)
    before = (out / "edge" / "student.pt").stat().st_mtime_ns
    more = DistillConfig(presets=("edge", "causal"), stage1="edge", steps={"edge": 5, "causal": 3}, **FAST)
    cards = distill(synthetic["pseudo"], out, config=more, progress=False)
    assert (out / "edge" / "student.pt").stat().st_mtime_ns == before  # kept, not retrained
    assert cards["causal"]["training"]["steps"] == 3 and cards["causal"]["stage"] == 2
    assert more.matches_preset("edge", first.to_dict()) and not more.matches(first.to_dict())
    assert not more.matches_preset("causal", first.to_dict())  # causal would train 600 steps under `first`
    with pytest.raises(DistillError, match="another config"):  # edge's own steps changed
        distill(
            synthetic["pseudo"], out, config=replace(more, steps={"edge": 6, "causal": 3}), progress=False
        )
    other = replace(more, overrides={"causal": {"input_encoding": "mulaw"}})
    assert other.matches_preset("edge", more.to_dict()) and not other.matches_preset("causal", more.to_dict())
    assert not more.matches_preset("edge", None) and not more.matches_preset("edge", {"presets": ["huge"]})


def test_students_are_not_reused_or_resumed_on_other_labels(synthetic, tmp_path, monkeypatch) -> None:
    """A finished student, or a partial checkpoint, trained on other pseudo-labels is refused, not kept."""
    cfg = DistillConfig(presets=("edge",), stage1="edge", steps={"edge": 5}, **FAST)
    out = tmp_path / "students"
    distill(synthetic["pseudo"], out, config=cfg, progress=False)
    other = write_dataset(tmp_path / "other", split="unlabeled", utterances=6, seconds=3.0, seed=5)
    with pytest.raises(DistillError, match=r"trained on other labels \(pseudo-labels differ\)"):
        distill(other, out, config=cfg, progress=False)
    before = (out / "edge" / "student.pt").stat().st_mtime_ns
    distill(synthetic["pseudo"], out, config=cfg, progress=False)  # the same labels: still kept
    # ... also read from another folder whose manifest names another source (the labels are the same shards)
    moved = tmp_path / "moved"
    shutil.copytree(synthetic["pseudo"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    (moved / "manifest.json").write_text(json.dumps({**manifest, "name": "relabeled elsewhere"}))
    distill(moved, out, config=cfg, progress=False)
    assert (out / "edge" / "student.pt").stat().st_mtime_ns == before

    original = ChunkSampler.batch
    monkeypatch.setattr(ChunkSampler, "batch", _dying_at(16))  # dies after the step-10 checkpoint
    ckpt = tmp_path / "checkpoint.pt"
    settings = DistillConfig(**FAST)
    with pytest.raises(KeyboardInterrupt):
        train_student(preset("edge"), load_split(synthetic["pseudo"]), settings=settings, steps=25,
                      checkpoint=ckpt, progress=False)  # fmt: skip
    monkeypatch.setattr(ChunkSampler, "batch", original)
    with pytest.raises(DistillError, match="other labels"):
        train_student(preset("edge"), load_split(other), settings=settings, steps=25, checkpoint=ckpt,
                      progress=False)  # fmt: skip
    _, summary = train_student(preset("edge"), load_split(synthetic["pseudo"]), settings=settings, steps=25,
                               checkpoint=ckpt, progress=False)  # fmt: skip
    assert summary["steps_this_run"] == 15  # its own labels resume it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_two_stage_distill_with_feature_loss_runs_on_cuda(synthetic, tmp_path) -> None:
    """Stage 2 on the GPU: the frozen stage-1 student moves there for the feature loss and back to the CPU."""
    config = DistillConfig(
        presets=("tiny", "edge"), stage1="tiny", steps={"tiny": 20, "edge": 10}, feature_weight=0.1, **FAST
    )
    cards = distill(
        synthetic["pseudo"],
        tmp_path / "s",
        config=config,
        test_dir=synthetic["test"],
        progress=False,
        device="cuda",
    )
    for name in ("tiny", "edge"):
        assert cards[name]["training"]["device"].startswith("cuda:0 (")
        assert np.isfinite(cards[name]["test"]["metrics"]["mse"])
    assert "feature" in cards["edge"]["training"]["last_losses"]
    assert next(load_student(tmp_path / "s" / "edge" / "student.pt").parameters()).device.type == "cpu"
