"""The shipped Whisper-base encoder: checksum refusal, packing, long-audio chunking, feature shapes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from teacher.encoder import (
    FRAME_SAMPLES,
    WINDOW_SAMPLES,
    EncoderConfig,
    EncoderError,
    WhisperEncoder,
    ensure_whisper_folder,
    pack_pieces,
    plan_pieces,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ensure_whisper_folder(tmp_path_factory.mktemp("cache") / "whisper-base")


def test_corrupted_weights_are_refused(folder, tmp_path):
    bad = tmp_path / "whisper-base"
    shutil.copytree(folder, bad)
    with open(bad / "model.bin", "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EncoderError, match="sha256"):
        ensure_whisper_folder(bad)


def test_long_clip_pieces_cover_every_frame_once_with_context():
    n = 75 * 16000 + 123
    pieces = plan_pieces([n], overlap_samples=5 * 16000)
    kept = []
    for p in pieces:
        assert p.end - p.start <= WINDOW_SAMPLES
        kept.extend(range(p.start // FRAME_SAMPLES + p.keep_lo, p.start // FRAME_SAMPLES + p.keep_hi))
        if p.start > 0:
            assert p.keep_lo * FRAME_SAMPLES >= 5 * 16000  # past context
        if p.end < n:
            assert (p.end - p.start) - p.keep_hi * FRAME_SAMPLES >= 5 * 16000  # future context
    assert kept == list(range(-(-n // FRAME_SAMPLES)))


def test_packing_fills_windows_without_overlap():
    pieces = plan_pieces([3 * 16000, 20 * 16000, 9 * 16000, 1000], overlap_samples=0)
    windows = pack_pieces(pieces, gap_samples=8000)
    assert len(windows) == 2
    for placed in windows:
        spans = sorted((off, off + p.end - p.start) for p, off in placed)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        assert spans[-1][1] <= WINDOW_SAMPLES and all(off % FRAME_SAMPLES == 0 for off, _ in spans)


def test_encode_batch_shapes_and_packing_is_local(folder):
    enc = WhisperEncoder(EncoderConfig(compute_type="int8"), folder=folder)
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    a = (0.2 * np.sin(2 * np.pi * 220 * t) * (t > 0.3)).astype(np.float32)
    b = (0.05 * rng.standard_normal(7777)).astype(np.float32)
    fa, fb = enc.encode_batch([a, b])
    assert fa.shape == (50, 512) and fb.shape == (-(-7777 // 320), 512)
    assert np.isfinite(fa).all()
    alone = enc.encode_batch([a])[0]
    cos = (fa * alone).sum(-1) / (np.linalg.norm(fa, axis=-1) * np.linalg.norm(alone, axis=-1))
    assert cos.mean() > 0.9  # a neighbour in the pack barely changes an utterance's features
    assert enc.size()["encoder_params"] > 1_000_000


def test_torch_port_matches_ctranslate2_and_exposes_layers(folder):
    """The PyTorch encoder built from model.bin reproduces CTranslate2's float32 output at its last layer."""
    rng = np.random.default_rng(1)
    t = np.arange(2 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + t)) + 0.02 * rng.standard_normal(len(t))).astype(
        np.float32
    )
    ct2 = WhisperEncoder(EncoderConfig(compute_type="float32"), folder=folder).encode_batch([audio])[0]
    last = WhisperEncoder(EncoderConfig(layers=(6,)), folder=folder).encode_batch([audio])[0]
    assert last.shape == ct2.shape == (100, 512)
    assert np.abs(last - ct2).max() < 1e-2 * np.abs(ct2).max()
    both = WhisperEncoder(EncoderConfig(layers=(3, 6)), folder=folder)
    feats = both.encode_batch([audio])[0]
    assert both.dim == 1024 and feats.shape == (100, 1024)
    np.testing.assert_allclose(feats[:, 512:], last, atol=1e-4)
    assert np.abs(feats[:, :512] - last).mean() > 0.1  # layer 3 is a different representation


def test_encoder_layers_are_validated_and_keep_the_default_identity():
    from teacher.encoder import encoder_identity

    with pytest.raises(ValueError, match="layers"):
        EncoderConfig(layers=(7,))
    with pytest.raises(ValueError, match="layers"):
        EncoderConfig(layers=(3, 3))
    assert EncoderConfig.from_dict(EncoderConfig(layers=(2, 6)).to_dict()) == EncoderConfig(layers=(2, 6))
    assert EncoderConfig().dim == 512 and EncoderConfig(layers=(0, 3, 6)).dim == 1536
    ids = {encoder_identity(EncoderConfig()), encoder_identity(EncoderConfig(layers=(6,))),
           encoder_identity(EncoderConfig(layers=(3, 6)))}  # fmt: skip
    assert len(ids) == 3
    # the CTranslate2 path's identity is the one it had before ``layers`` existed (feature caches stay valid)
    assert encoder_identity(EncoderConfig()) == "80e6275200cadff5"
