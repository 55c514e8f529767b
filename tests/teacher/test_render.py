"""Rendering viseme posteriors through the coarticulation model, and the teacher's render blend."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from teacher.constants import ARKIT_52, SAMPLE_RATE, frame_anchors
from teacher.encoder import EncoderConfig
from teacher.groundtruth import VISEMES, curves_at_times, segment_targets
from teacher.model import Teacher, TeacherConfig, TeacherEnsemble, TeacherError, build_decoder
from teacher.render import render_posteriors, viseme_segments

FPS = 30
RUNS = [("sil", 5), ("PP", 2), ("aa", 6), ("O", 4), ("FF", 1), ("E", 3), ("sil", 3)]


def _onehot_and_truth() -> tuple[np.ndarray, np.ndarray]:
    """One-hot posteriors of RUNS and the ground truth of the same segments (edges half a frame off anchors)."""
    labels = np.concatenate([[VISEMES.index(v)] * n for v, n in RUNS])
    anchors = frame_anchors(len(labels), FPS).astype(np.float64)
    half = SAMPLE_RATE / FPS / 2
    segs, s = [], 0
    for v, n in RUNS:
        segs.append(
            SimpleNamespace(start=anchors[s] - half, end=anchors[s + n - 1] + half, phoneme=v, viseme=v)
        )
        s += n
    truth = curves_at_times(segs, anchors / SAMPLE_RATE)
    return np.eye(len(VISEMES))[labels], truth


def test_one_hot_posteriors_render_to_the_ground_truth_of_their_segments():
    posteriors, truth = _onehot_and_truth()
    segs = viseme_segments(posteriors, FPS)
    assert [s.viseme for s in segs] == [v for v, _ in RUNS]
    np.testing.assert_allclose(render_posteriors(posteriors, FPS), truth, atol=1e-6)
    closed = ARKIT_52.index("mouthClose")
    assert render_posteriors(posteriors, FPS)[5:7, closed].max() > 0.5  # the PP run closes the lips


def test_posteriors_weight_the_targets_and_bad_shapes_are_refused():
    p = np.zeros((7, len(VISEMES)))
    p[:, VISEMES.index("aa")], p[:, VISEMES.index("O")] = (
        0.7,
        0.3,
    )  # one segment: every frame reads its target
    targets = segment_targets([SimpleNamespace(viseme=v, phoneme=v) for v in VISEMES])
    want = np.clip(0.7 * targets[VISEMES.index("aa")] + 0.3 * targets[VISEMES.index("O")], 0, 1)
    np.testing.assert_allclose(render_posteriors(p, FPS), np.tile(want, (7, 1)), atol=1e-6)
    assert render_posteriors(np.zeros((0, len(VISEMES))), FPS).shape == (0, 52)
    with pytest.raises(ValueError, match="viseme posteriors"):
        render_posteriors(np.zeros((4, 3)), FPS)


def test_teacher_blends_its_render_and_refuses_a_blend_without_a_viseme_head():
    config = TeacherConfig(
        features="logmel",
        conv_channels=8,
        gru_hidden=8,
        gru_layers=1,
        aux_classes=len(VISEMES),
        render_blend=0.25,
    )
    torch.manual_seed(0)
    decoder = build_decoder(config)
    teacher = Teacher(config, decoder)
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    got = teacher.predict(audio)
    feats = torch.from_numpy(teacher.features([audio])[0])[None]
    with torch.no_grad():
        curves, logits = decoder.eval().forward_with_aux(feats)
    rendered = render_posteriors(logits[0].softmax(-1).numpy(), FPS)
    np.testing.assert_allclose(got, 0.75 * curves[0].numpy() + 0.25 * rendered, atol=1e-6)
    plain = Teacher(replace(config, render_blend=0.0), decoder).predict(audio)
    np.testing.assert_allclose(plain, curves[0].numpy(), atol=1e-6)
    with pytest.raises(TeacherError, match="viseme head"):
        Teacher(
            replace(config, aux_classes=0), build_decoder(replace(config, aux_classes=0, render_blend=0.0))
        )
    with pytest.raises(ValueError, match="render_blend"):
        replace(config, render_blend=1.5)


def test_an_ensembles_viseme_posterior_is_the_members_mean():
    config = TeacherConfig(
        features="logmel", conv_channels=8, gru_hidden=8, gru_layers=1, aux_classes=4, members=2
    )
    torch.manual_seed(1)
    ens = build_decoder(config).eval()
    assert isinstance(ens, TeacherEnsemble)
    feats = torch.randn(1, 20, config.input_dim)
    with torch.no_grad():
        curves, log_post = ens.forward_with_aux(feats)
        parts = [m.forward_with_aux(feats) for m in ens.members]
    torch.testing.assert_close(curves, (parts[0][0] + parts[1][0]) / 2)
    torch.testing.assert_close(log_post.exp(), (parts[0][1].softmax(-1) + parts[1][1].softmax(-1)) / 2)


def _ckpt(config: TeacherConfig, seed: int) -> dict:
    torch.manual_seed(seed)
    decoder = build_decoder(config)
    return {
        "config": config.to_dict(),
        "state_dict": decoder.state_dict(),
        "encoder": EncoderConfig().to_dict(),
    }


def test_a_render_teacher_attached_to_another_decoder(tmp_path):
    """attach_render: the curves of one decoder (no viseme head needed) blended with another's render, saved in one
    checkpoint that Teacher.load reads back; mismatched inputs and a render teacher without a head are refused."""
    from teacher.model import attach_render

    small = {"features": "logmel", "conv_channels": 8, "gru_layers": 1}
    plain = _ckpt(TeacherConfig(gru_hidden=8, **small), 0)
    viseme = _ckpt(TeacherConfig(gru_hidden=6, aux_classes=len(VISEMES), **small), 1)
    both = attach_render(plain, viseme, 0.4)
    torch.save(both, tmp_path / "teacher.pt")
    teacher = Teacher.load(tmp_path)
    assert teacher.config.render_blend == 0.4 and teacher.render_decoder is not None
    audio = np.random.default_rng(2).normal(0, 0.1, 12000).astype(np.float32)
    feats = torch.from_numpy(teacher.features([audio])[0])[None]
    with torch.no_grad():
        curves = teacher.decoder(feats)[0].numpy()
        post = teacher.render_decoder.forward_with_aux(feats)[1][0].softmax(-1).numpy()
    np.testing.assert_allclose(
        teacher.predict(audio), 0.6 * curves + 0.4 * render_posteriors(post, FPS), atol=1e-6
    )
    alone = Teacher(TeacherConfig(gru_hidden=8, **small), teacher.decoder)
    assert teacher.size()["decoder_params"] > alone.size()["decoder_params"]
    with pytest.raises(TeacherError, match="no viseme head"):
        attach_render(viseme, plain, 0.4)
    other = {**viseme, "config": {**viseme["config"], "fps": 60}}
    with pytest.raises(TeacherError, match="fps"):
        attach_render(plain, other, 0.4)
    with pytest.raises(TeacherError, match="render blend"):
        attach_render(plain, viseme, 0.0)
