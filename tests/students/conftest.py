"""Tiny synthetic datasets whose curves are a learnable function of the audio (band energies, 50 ms smoothed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teacher.constants import ARKIT_52, frame_anchors, num_frames
from teacher.dataset import Phoneme, Utterance, write_manifest, write_shard

FPS = 30


def make_utterance(rng: np.random.Generator, idx: int, seconds: float) -> Utterance:
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = np.clip(np.convolve(rng.normal(size=n // 400 + 2), np.ones(3) / 3, "same"), 0, None)
    env = np.repeat(env, 400)[:n]
    freq = 200 + 600 * rng.random()
    audio = (0.3 * env * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=n)).astype(np.float32)
    frames = num_frames(n, FPS)
    anchors = frame_anchors(frames, FPS)
    energy = np.array([np.mean(audio[max(0, a - 400) : a + 400] ** 2) for a in anchors])
    curves = np.zeros((frames, len(ARKIT_52)), np.float32)
    curves[:, :] = np.clip(8 * energy, 0, 1)[:, None] * np.linspace(0.2, 1.0, len(ARKIT_52))[None]
    phonemes = [Phoneme(int(a), int(a) + 800, "m", "PBM") for a in anchors[::15]]
    return Utterance(id=f"u{idx}", audio=audio, labels=curves, truth=curves, phonemes=phonemes)


def write_dataset(root: Path, *, split: str, utterances: int, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    utts = [make_utterance(rng, i, seconds) for i in range(utterances)]
    entry = write_shard(root / "shards" / "shard-00000.npz", utts, fps=FPS, n_channels=len(ARKIT_52))
    write_manifest(
        root, [entry], name="synthetic", split=split, fps=FPS, channel_names=ARKIT_52,
        has_labels=True, has_truth=True, label_source="synthetic",
    )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    return {
        "pseudo": write_dataset(base / "pseudo", split="unlabeled", utterances=6, seconds=3.0, seed=0),
        "labeled": write_dataset(base / "labeled", split="labeled", utterances=4, seconds=3.0, seed=1),
        "test": write_dataset(base / "test", split="test", utterances=3, seconds=3.0, seed=2),
    }
