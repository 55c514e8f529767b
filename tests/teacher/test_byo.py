"""Bring-your-own ONNX teacher: a tiny exported conv net round-trips through OnnxTeacher and pseudo_label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synth_teacher_data import make_dataset
from torch import nn

from teacher.byo import OnnxTeacher, OnnxTeacherError
from teacher.constants import frame_anchors, num_frames
from teacher.dataset import Dataset
from teacher.label import pseudo_label

CHANNELS = ["jawOpen", "mouthClose", "mouthFunnel"]


class Windowed(nn.Module):
    """[B, 800] window -> [B, 3]: sigmoid of a linear map of the window's energy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = (x**2).mean(dim=1, keepdim=True)
        return torch.sigmoid(torch.cat([10 * e, -10 * e, 5 * e], dim=1))


class Utterance(nn.Module):
    """[1, N] -> [T, 3] at 30 fps (one frame per 533 samples, strided conv)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, kernel_size=1066, stride=533, padding=533)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x[:, None]))[0].transpose(0, 1)


def _export(module: nn.Module, example: torch.Tensor, path, dynamic: dict) -> None:
    torch.onnx.export(module, (example,), str(path), input_names=["audio"], output_names=["curves"],
                      dynamic_axes=dynamic, external_data=False, dynamo=False)  # fmt: skip


def test_window_mode_matches_torch(tmp_path):
    model = Windowed()
    _export(model, torch.zeros(2, 800), tmp_path / "w.onnx", {"audio": {0: "batch"}, "curves": {0: "batch"}})
    teacher = OnnxTeacher(
        tmp_path / "w.onnx", channel_names=CHANNELS, fps=30, mode="window", window_samples=800
    )
    audio = (0.3 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    pred = teacher.predict(audio)
    n = num_frames(len(audio), 30)
    padded = np.pad(audio, (400, 800))
    windows = np.stack([padded[a : a + 800] for a in frame_anchors(n, 30)])
    expected = model(torch.from_numpy(windows)).detach().numpy()
    assert pred.shape == (30, 3)
    np.testing.assert_allclose(pred, expected, atol=1e-5)


def test_utterance_mode_labels_a_dataset(tmp_path):
    torch.manual_seed(0)
    model = Utterance()
    _export(model, torch.zeros(1, 16000), tmp_path / "u.onnx", {"audio": {1: "n"}, "curves": {0: "t"}})
    teacher = OnnxTeacher(tmp_path / "u.onnx", channel_names=CHANNELS, fps=30)
    audio = np.zeros(24000, np.float32)
    assert teacher.predict(audio).shape == (num_frames(24000, 30), 3)

    src = make_dataset(tmp_path / "src", n_shards=2, per_shard=2, seed=0, split="unlabeled", labels=False)
    manifest = pseudo_label(src, tmp_path / "out", teacher=teacher)
    assert manifest["channel_names"] == CHANNELS and not manifest["has_truth"]  # 52-channel truth not carried
    for u in Dataset(tmp_path / "out"):
        assert u.labels.shape == (u.n_frames(30), 3)
        assert np.allclose(u.labels, teacher.predict(u.audio))


def test_wrong_channel_count_is_refused(tmp_path):
    _export(
        Windowed(), torch.zeros(2, 800), tmp_path / "w.onnx", {"audio": {0: "batch"}, "curves": {0: "batch"}}
    )
    teacher = OnnxTeacher(
        tmp_path / "w.onnx", channel_names=["a", "b"], fps=30, mode="window", window_samples=800
    )
    with pytest.raises(OnnxTeacherError, match="3 channels"):
        teacher.predict(np.zeros(1600, np.float32))
