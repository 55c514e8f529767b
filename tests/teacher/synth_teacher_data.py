"""Tiny synthetic datasets for the teacher tests: tones whose loudness envelope drives a few rig channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from teacher.constants import ARKIT_52, SAMPLE_RATE, frame_times, num_frames
from teacher.dataset import Phoneme, Utterance, write_manifest, write_shard

FPS = 30


def synth_utterance(rng: np.random.Generator, uid: str, seconds: float) -> Utterance:
    """Audio whose envelope (on/off syllables) sets jawOpen; closed stretches are bilabial 'p' intervals."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    edges = np.sort(rng.uniform(0, seconds, size=int(seconds * 4)))
    on = (np.searchsorted(edges, t) % 2).astype(np.float64)
    env = np.convolve(on, np.hanning(801) / np.hanning(801).sum(), mode="same")
    f0 = rng.uniform(120, 300)
    audio = 0.3 * env * (np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 3 * f0 * t))
    audio = (audio + 0.003 * rng.standard_normal(n)).astype(np.float32)
    frames = num_frames(n, FPS)
    e = np.interp(frame_times(frames, FPS), t, env)
    curves = np.zeros((frames, len(ARKIT_52)), np.float32)
    curves[:, ARKIT_52.index("jawOpen")] = e
    curves[:, ARKIT_52.index("mouthClose")] = 1 - e
    curves[:, ARKIT_52.index("mouthFunnel")] = 0.5 * e
    closed = np.flatnonzero(np.diff(np.r_[0, 1 - on, 0]))
    phonemes = [
        Phoneme(int(s), int(e_), "p", "PP") for s, e_ in zip(closed[::2], closed[1::2]) if e_ - s > 1600
    ]
    return Utterance(
        id=uid, audio=audio, labels=curves, truth=curves, phonemes=phonemes, meta={"voice": "synth"}
    )


def make_dataset(root: Path, *, n_shards: int, per_shard: int, seed: int, split: str = "labeled",
                 seconds: tuple[float, float] = (1.0, 2.5), labels: bool = True,
                 voices: tuple[str, ...] = ("synth",)) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    entries = []
    for s in range(n_shards):
        utts = [synth_utterance(rng, f"{split}-{s}-{i}", rng.uniform(*seconds)) for i in range(per_shard)]
        for i, u in enumerate(utts):
            u.meta["voice"] = voices[i % len(voices)]
            if not labels:
                u.labels = None
        entries.append(write_shard(root / "shards" / f"shard-{s:05d}.npz", utts, fps=FPS, n_channels=52))
    write_manifest(root, entries, name="synth", split=split, fps=FPS, channel_names=ARKIT_52,
                   has_labels=labels, has_truth=True, label_source="synthetic")  # fmt: skip
    return root
