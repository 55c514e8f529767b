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
