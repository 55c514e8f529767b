"""Toy students and speech-like windows shared by the compression tests."""

from __future__ import annotations

import numpy as np
import torch

from students.model import Student, StudentConfig


def tiny_student(
    seed: int = 0,
    *,
    frontend: tuple[int, ...] = (8, 8, 16),
    input_encoding: str = "linear",
    logmel: bool = False,
) -> Student:
    """A 4-channel student with a 64 ms window (random weights, eval mode); ``logmel``: a 16-band log-mel
    frontend (8 ms window) with one 1x1 conv of ``frontend[-1]`` channels instead of the waveform convs."""
    torch.manual_seed(seed)
    mel = dict(frontend="logmel", strides=(1,), logmel_ms=8.0, logmel_bands=16) if logmel else {}
    config = StudentConfig(
        name="t",
        past_ms=32.0,
        future_ms=32.0,
        **mel,
        frontend_channels=frontend[-1:] if logmel else frontend,
        context_channels=(16,),
        context_dilations=(1,),
        head_hidden=(16,),
        channel_names=("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker"),
        input_encoding=input_encoding,
    )
    return Student(config).eval()


def speechlike(n: int, width: int, seed: int) -> np.ndarray:
    """``n`` windows of amplitude-varied tones plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(width)[None]
    tone = np.sin(t * rng.uniform(0.01, 0.3, (n, 1))) * rng.uniform(0.05, 0.5, (n, 1))
    return (tone + 0.02 * rng.standard_normal((n, width))).astype(np.float32)


def toy_split(model: Student):
    """Four speech-like utterances of 0.5 s with random targets in [0, 1] (15 frames at 30 fps each)."""
    from students.data import Split

    rng = np.random.default_rng(0)
    audio = [speechlike(1, 8000, i)[0] for i in range(4)]
    targets = [rng.uniform(0, 1, (15, len(model.config.channel_names))).astype(np.float32) for _ in audio]
    return Split("toy", audio, targets, [[] for _ in audio], 30, list(model.config.channel_names), "x")
