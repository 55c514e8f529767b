"""The README's engine-integration example animates a WAV from a .tflite + card alone, matching PyTorch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import compress.export as ex
from students.model import Student, StudentConfig
from teacher.constants import frame_anchors, num_frames

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "tflite_example.py"


@pytest.mark.parametrize("encoding", ["linear", "mulaw"])
def test_card_only_example_matches_the_pytorch_student(tmp_path, encoding):
    torch.manual_seed(0)
    config = StudentConfig(
        name="t",
        past_ms=32.0,
        future_ms=16.0,
        frontend_channels=(8, 8, 16),
        context_channels=(16,),
        context_dilations=(1,),
        head_hidden=(16,),
        channel_names=("jawOpen", "mouthClose", "mouthFunnel"),
        input_encoding=encoding,
    )
    model = Student(config).eval()
    rng = np.random.default_rng(0)
    windows = (0.3 * rng.standard_normal((16, model.window_samples))).astype(np.float32)
    binaries = ex.export(
        model,
        windows,
        windows,
        tmp_path,
        name="t",
        config=ex.ExportConfig(formats=("tflite",), dtypes=("fp32", "a16w8")),
    )
    audio = (0.3 * np.sin(np.arange(11_000) * 0.05) * rng.uniform(0.2, 1.0, 11_000)).astype(np.float32)
    wav = tmp_path / "speech.wav"
    sf.write(wav, audio, 16_000, subtype="FLOAT")

    spec = importlib.util.spec_from_file_location("tflite_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    n = num_frames(len(audio), 30)
    with torch.no_grad():
        expected = model.forward_full(torch.from_numpy(audio)[None], torch.from_numpy(frame_anchors(n, 30)))[
            0
        ]
    for binary, atol in zip(binaries, (1e-4, 0.02)):  # fp32, then int16-in/int16-out a16w8
        frames = example.animate(str(binary), str(wav))
        assert frames.shape == (n, 3)
        np.testing.assert_allclose(frames, expected.numpy(), atol=atol)
