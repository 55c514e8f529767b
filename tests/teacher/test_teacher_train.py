"""Teacher training on a tiny synthetic dataset (log-mel features): it learns, it resumes, it saves a card."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from synth_teacher_data import make_dataset

import teacher.train as train_mod
from teacher.dataset import Dataset
from teacher.features import MEL_RATE, log_mel, to_frames
from teacher.model import Teacher, TeacherConfig, TeacherEnsemble, count_params
from teacher.train import TeacherTrainConfig, train_teacher


def _config(tmp_path, epochs: int) -> TeacherTrainConfig:
    return TeacherTrainConfig(
        model=TeacherConfig(features="logmel", conv_channels=32, gru_hidden=32, gru_layers=1, dropout=0.1),
        epochs=epochs,
        batch_size=8,
        lr=5e-3,
        checkpoint_every=2,
        augment_variants=1,
        threads=1,
        cache_dir=str(tmp_path / "cache"),
    )


def test_log_mel_and_frame_alignment():
    audio = np.zeros(16000, np.float32)
    audio[8000:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    mel = log_mel(audio)
    assert mel.shape == (100, 80)
    loud = to_frames(mel, MEL_RATE, 30, 30).mean(axis=1)
    assert loud[:13].max() < loud[17:].min()  # the tone starts at 0.5 s = frame 15


def test_train_learns_and_writes_card(tmp_path):
    data = make_dataset(tmp_path / "labeled", n_shards=2, per_shard=12, seed=0)
    test = make_dataset(tmp_path / "test", n_shards=1, per_shard=6, seed=1, split="test")
    card = train_teacher(data, tmp_path / "out", config=_config(tmp_path, 8), eval_dir=test)
    assert card["history"][-1]["mse"] < 0.5 * card["history"][0]["mse"]
    assert card["metrics"]["test"]["mse_ratio_to_mean"] < 0.5
    saved = json.loads((tmp_path / "out" / "teacher.json").read_text())
    assert TeacherTrainConfig.from_dict(saved["config"]) == _config(tmp_path, 8)
    teacher = Teacher.load(tmp_path / "out")
    pred = teacher.predict(np.zeros(16000, np.float32))
    assert pred.shape == (30, 52) and (pred >= 0).all() and (pred <= 1).all()

    # per-voice breakdown: groups partition the utterances and their frame-weighted MSE is the overall MSE
    two = make_dataset(tmp_path / "two", n_shards=1, per_shard=6, seed=1, split="test", voices=("a", "b"))
    m = train_mod.evaluate_teacher(teacher, two, by=("voice",))
    groups = m["by_voice"]
    assert set(groups) == {"a", "b"} and groups["a"]["utterances"] == groups["b"]["utterances"] == 3
    frames = {v: sum(len(u.truth) for u in Dataset(two) if u.meta["voice"] == v) for v in groups}
    pooled = sum(groups[v]["mse"] * frames[v] for v in groups) / sum(frames.values())
    assert pooled == pytest.approx(m["mse"], rel=1e-5)
    assert "voice" in train_mod.format_groups(m) and "a " in train_mod.format_groups(m)


class _Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(tmp_path, monkeypatch, capsys):
    data = make_dataset(tmp_path / "labeled", n_shards=1, per_shard=10, seed=0)
    cfg = _config(tmp_path, 4)
    train_teacher(data, tmp_path / "full", config=cfg)

    real_save = train_mod.atomic_torch_save

    def save_then_die(path, obj):
        real_save(path, obj)
        if obj.get("epoch") == 2:
            raise _Killed

    monkeypatch.setattr(train_mod, "atomic_torch_save", save_then_die)
    with pytest.raises(_Killed):
        train_teacher(data, tmp_path / "resumed", config=cfg)
    monkeypatch.setattr(train_mod, "atomic_torch_save", real_save)
    assert not (tmp_path / "resumed" / "teacher.pt").exists()
    # a checkpoint saved before an option existed (the closure hinge) resumes at that option's default
    ckpt_path = tmp_path / "resumed" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt["train_config"]["closure_hinge_weight"], ckpt["train_config"]["closure_margin"]
    torch.save(ckpt, ckpt_path)
    assert cfg.matches(ckpt["train_config"])
    assert not replace(cfg, closure_hinge_weight=0.1).matches(ckpt["train_config"])
    capsys.readouterr()
    train_teacher(data, tmp_path / "resumed", config=cfg)
    assert "resuming from" in capsys.readouterr().err  # resumed, not retrained from scratch

    a = torch.load(tmp_path / "full" / "teacher.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "teacher.pt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_speed_augment_keeps_labels_aligned_and_holdout_is_unseen_voice():
    from dataclasses import replace as dc_replace

    from synth_teacher_data import synth_utterance

    from teacher.augment import AugmentConfig
    from teacher.constants import ARKIT_52, frame_times, num_frames
    from teacher.train import _holdout_split, augment_utterance

    rng = np.random.default_rng(0)
    u = synth_utterance(rng, "u", 2.0)
    only_speed = AugmentConfig(p_noise=0, p_reverb=0, p_gain=0, p_band=0, p_speed=1.0, speed=(0.8, 0.8))
    audio, labels, _ = augment_utterance(u, rng, TeacherTrainConfig(augment=only_speed), None)
    assert len(audio) == pytest.approx(len(u.audio) / 0.8, abs=2)
    assert labels.shape == (num_frames(len(audio), 30), 52)
    jaw = ARKIT_52.index("jawOpen")
    # slowed down 0.8x: the label at new time t is the old label at 0.8 t
    old = u.labels[:, jaw]
    k = np.arange(0, len(labels), 5)
    expected = np.interp(frame_times(len(labels), 30)[k] * 0.8, frame_times(len(old), 30), old)
    assert np.abs(labels[k, jaw] - expected).max() < 0.1  # a frame of misalignment would cost ~1 at edges

    utts = [dc_replace(synth_utterance(rng, str(i), 1.0), meta={"voice": v}) for i, v in enumerate("aabbc")]
    train_idx, held_idx, voices = _holdout_split(utts, 1)
    assert voices == ["c"] and held_idx == [4] and train_idx == [0, 1, 2, 3]
    assert _holdout_split(utts, 0)[1] == []


def test_self_training_adds_pseudo_labels_without_ground_truth_leak(tmp_path, monkeypatch):
    from teacher.groundtruth import GroundTruthConfig

    data = make_dataset(tmp_path / "labeled", n_shards=1, per_shard=8, seed=0)
    manifest = json.loads((data / "manifest.json").read_text())  # labels = procedural ground truth
    manifest["label_source"] = "groundtruth"
    manifest.setdefault("info", {})["groundtruth"] = GroundTruthConfig().to_dict()
    (data / "manifest.json").write_text(json.dumps(manifest))
    pseudo = make_dataset(tmp_path / "pseudo", n_shards=1, per_shard=6, seed=3, split="unlabeled")

    seen: dict[str, bool] = {}
    real_augment = train_mod.augment_utterance

    def spy(u, rng, config, groundtruth, labels=None):
        seen[u.id] = groundtruth is not None
        return real_augment(u, rng, config, groundtruth, labels)

    monkeypatch.setattr(train_mod, "augment_utterance", spy)
    cfg = _config(tmp_path, 2)
    card = train_teacher(data, tmp_path / "st", config=cfg, pseudo_dir=pseudo)
    labeled_ids = {k for k in seen if k.startswith("labeled")}
    pseudo_ids = {k for k in seen if k.startswith("unlabeled")}
    assert len(labeled_ids) == 8 and len(pseudo_ids) == 6
    assert all(seen[k] for k in labeled_ids)  # ground truth is recomputed exactly after a speed change
    assert not any(seen[k] for k in pseudo_ids)  # pseudo-labels are only warped: truth never leaks in
    assert card["self_training"]["utterances"] == 6 and card["train_data"]["utterances"] == 8
    assert card["holdout"]["utterances"] == 1  # every 8th *labeled* utterance, never a pseudo-labeled one

    plain = train_teacher(data, tmp_path / "plain", config=cfg)
    assert plain["self_training"] is None and plain["train_data"]["sha256"] != card["train_data"]["sha256"]
    # the predict-the-mean baseline is a ground-truth statistic in both runs
    np.testing.assert_array_equal(
        Teacher.load(tmp_path / "st").label_mean, Teacher.load(tmp_path / "plain").label_mean
    )


def test_frame_visemes_follow_phoneme_intervals():
    from teacher.dataset import Phoneme
    from teacher.groundtruth import VISEMES
    from teacher.train import frame_visemes

    # at 30 fps the anchors are 0, 533.3.., 1066.6.. samples (rounded to the anchor grid)
    phs = [Phoneme(500, 1100, "p", "PP"), Phoneme(1100, 2200, "a", "aa")]
    v = frame_visemes(phs, 6, 30)
    names = [VISEMES[i] for i in v]
    assert names == ["sil", "PP", "PP", "aa", "aa", "sil"]


def test_viseme_head_trains_on_labeled_clips_only_and_is_dropped_at_inference(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "labeled", n_shards=1, per_shard=8, seed=0)
    pseudo = make_dataset(tmp_path / "pseudo", n_shards=1, per_shard=4, seed=3, split="unlabeled")
    seen_targets = []
    real_batch = train_mod._batch

    def spy(items):
        out = real_batch(items)
        seen_targets.append(out[3])
        return out

    monkeypatch.setattr(train_mod, "_batch", spy)
    cfg = replace(_config(tmp_path, 2), viseme_weight=0.5)
    card = train_teacher(data, tmp_path / "vis", config=cfg, pseudo_dir=pseudo)
    assert card["config"]["model"]["aux_classes"] > 0
    rows = torch.cat([t for t in seen_targets if t.shape[1] == seen_targets[0].shape[1]])
    pp = train_mod.VISEMES.index("PP")
    assert (rows == pp).any()  # labeled clips: frames inside bilabial intervals
    n_ignored = int((rows == -1).all(dim=1).sum())  # pseudo clips: no targets (their phonemes are held back)
    assert n_ignored > 0 and n_ignored < len(rows)
    teacher = Teacher.load(tmp_path / "vis")
    assert teacher.decoder.aux is not None
    assert teacher.predict(np.zeros(8000, np.float32)).shape == (15, 52)  # curves only


def test_ensemble_averages_members_and_reuses_a_finished_single_teacher(tmp_path, capsys):
    data = make_dataset(tmp_path / "labeled", n_shards=1, per_shard=10, seed=0)
    single = _config(tmp_path, 3)
    train_teacher(data, tmp_path / "out", config=single)
    one = Teacher.load(tmp_path / "out")
    capsys.readouterr()

    pair = replace(single, model=replace(single.model, members=2))
    card = train_teacher(data, tmp_path / "out", config=pair)
    err = capsys.readouterr().err
    assert (
        "resuming from" in err and "checkpoint.pt at epoch 3" in err
    )  # member 1 = the finished single teacher
    assert "member 2/2" in err and (tmp_path / "out" / "checkpoint-1.pt").is_file()
    assert [m["seed"] for m in card["members"]] == [0, train_mod.member_seed(0, 1)]
    assert card["decoder_params"] == 2 * count_params(one.decoder)

    both = Teacher.load(tmp_path / "out")
    assert isinstance(both.decoder, TeacherEnsemble) and len(both.decoder.members) == 2
    for k in one.decoder.state_dict():  # member 0 is the single teacher, weight for weight
        torch.testing.assert_close(both.decoder.members[0].state_dict()[k], one.decoder.state_dict()[k])
    feats = torch.randn(1, 40, one.config.input_dim)
    with torch.no_grad():
        a, b = (m(feats) for m in both.decoder.members)
        assert not torch.allclose(a, b)  # a different seed makes a different member
        torch.testing.assert_close(both.decoder(feats), (a + b) / 2)
        torch.testing.assert_close(a, one.decoder(feats))
    with pytest.raises(ValueError, match="members"):
        TeacherConfig(members=0)


def test_rerun_keeps_a_teacher_file_saved_before_a_config_field_existed(tmp_path):
    """The teacher's identity is its file's hash, and every pseudo-label is keyed by it: rerunning a finished
    training must not rewrite an equal teacher.pt (an older one lacking a since-added field included)."""
    data = make_dataset(tmp_path / "labeled", n_shards=1, per_shard=8, seed=0)
    config = _config(tmp_path, 2)
    train_teacher(data, tmp_path / "out", config=config)
    path = tmp_path / "out" / "teacher.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["members"]  # as saved before TeacherConfig.members existed
    torch.save(ckpt, path)
    old = path.read_bytes()
    train_teacher(data, tmp_path / "out", config=config)  # finished: resumes at the last epoch
    assert path.read_bytes() == old
    card = json.loads((tmp_path / "out" / "teacher.json").read_text())
    assert card["sha256"] == Teacher.load(path).identity

    ckpt["label_mean"] = ckpt["label_mean"] + 0.1  # another teacher: rewritten
    torch.save(ckpt, path)
    train_teacher(data, tmp_path / "out", config=config)
    assert path.read_bytes() != old and "members" in torch.load(path, weights_only=True)["config"]


def test_cli_decoder_width_flags_reach_the_saved_config(tmp_path, capsys):
    from compress.cli import main

    make_dataset(tmp_path / "corpus" / "labeled", n_shards=1, per_shard=6, seed=0)
    argv = ["teacher", "train", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "t")]
    argv += ["--features", "logmel", "--epochs", "1", "--augment-variants", "0"]
    assert main([*argv, "--gru-hidden", "12", "--conv-channels", "10"]) == 0
    teacher = Teacher.load(tmp_path / "t")
    assert (teacher.config.gru_hidden, teacher.config.conv_channels) == (12, 10)
    assert teacher.decoder.gru.hidden_size == 12 and teacher.decoder.convs[0].out_channels == 10
    assert main([*argv, "--gru-hidden", "0"]) != 0
    assert "--gru-hidden 0: must be at least 1" in capsys.readouterr().err


def test_cli_render_blend_needs_the_viseme_head_and_reaches_the_saved_config(tmp_path, capsys):
    from compress.cli import main

    make_dataset(tmp_path / "corpus" / "labeled", n_shards=1, per_shard=6, seed=0)
    argv = ["teacher", "train", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "t")]
    argv += ["--features", "logmel", "--epochs", "1", "--augment-variants", "0", "--gru-hidden", "8"]
    assert main([*argv, "--render-blend", "0.5"]) != 0
    assert "--render-blend needs the viseme head" in capsys.readouterr().err
    assert main([*argv, "--render-blend", "0.5", "--viseme-weight", "0.1"]) == 0
    teacher = Teacher.load(tmp_path / "t")
    assert teacher.config.render_blend == 0.5 and teacher.config.aux_classes > 0
    assert teacher.predict(np.zeros(8000, np.float32)).shape == (15, 52)
    capsys.readouterr()
    # the blend is inference only: another blend on the finished folder resumes the same weights, retrains nothing
    assert main([*argv, "--render-blend", "0.25", "--viseme-weight", "0.1"]) == 0
    assert "at epoch 1" in capsys.readouterr().err
    again = Teacher.load(tmp_path / "t")
    assert again.config.render_blend == 0.25 and again.identity != teacher.identity
    for key, value in teacher.decoder.state_dict().items():
        assert torch.equal(value, again.decoder.state_dict()[key]), key


def test_at_fps_keeps_crop_masks_and_velocity_weight_in_seconds():
    base = TeacherTrainConfig()
    sixty = base.at_fps(60)
    assert sixty.fps == 60 and sixty.max_frames == 2 * base.max_frames
    assert sixty.time_mask_frames == 2 * base.time_mask_frames
    assert sixty.velocity_weight == pytest.approx(4 * base.velocity_weight)
    assert sixty.at_fps(30) == replace(base, fps=30) and base.at_fps(0) == base
    with pytest.raises(ValueError, match="fps must be 0"):
        TeacherTrainConfig(fps=25)


def test_teacher_at_twice_the_corpus_rate_trains_on_exact_labels_and_is_evaluated_at_the_corpus_rate(
    tmp_path, capsys
):
    from compress.cli import main
    from teacher.constants import num_frames
    from teacher.groundtruth import GroundTruthConfig, curves_from_phonemes

    data = make_dataset(tmp_path / "corpus" / "labeled", n_shards=1, per_shard=6, seed=0)
    make_dataset(tmp_path / "corpus" / "test", n_shards=1, per_shard=3, seed=1, split="test")
    u = next(iter(Dataset(data)))
    gt = GroundTruthConfig()
    exact30 = curves_from_phonemes(u.phonemes, len(u.audio), fps=30, config=gt)
    at60 = train_mod.labels_at_fps(replace(u, labels=exact30), 30, 60, gt)
    assert at60.shape == (num_frames(len(u.audio), 60), 52) and exact30[:, 18].max() > 0.5  # mouthClose moves
    # the 60 fps anchors of even frames are the 30 fps anchors: truth recomputed at 60 fps agrees there
    np.testing.assert_allclose(at60[::2][: len(exact30)], exact30, atol=1e-6)
    # labels that are not procedural truth are resampled: the same on the shared anchors
    resampled = train_mod.labels_at_fps(u, 30, 60, None)
    np.testing.assert_allclose(resampled[::2][: len(u.labels)], u.labels, atol=1e-6)

    argv = ["teacher", "train", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "t")]
    argv += ["--features", "logmel", "--epochs", "1", "--augment-variants", "1", "--gru-hidden", "8"]
    argv += ["--fps", "60"]
    assert main(argv) == 0
    teacher = Teacher.load(tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "teacher.json").read_text())
    assert teacher.fps == 60 and saved["config"]["fps"] == 60 and saved["config"]["max_frames"] == 300
    assert teacher.predict(np.zeros(8000, np.float32)).shape == (30, 52)
    assert np.isfinite(saved["metrics"]["test"]["mse_ratio_to_mean"])  # compared with the 30 fps truth
    with pytest.raises(SystemExit):
        main([*argv[:-1], "25"])
    assert "invalid choice: 25" in capsys.readouterr().err
