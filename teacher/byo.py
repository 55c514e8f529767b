"""Bring your own teacher: any ONNX model from 16 kHz audio to named rig channels, usable by ``pseudo_label``.

Two shapes of model are supported:

* ``mode="utterance"``: input float32 ``[1, N]`` (a whole clip), output ``[T, C]`` or ``[1, T, C]`` where row
  ``t`` is the rig at time ``t / fps``; rows are resampled to the frame anchors of ``teacher.constants``.
* ``mode="window"``: input float32 ``[B, window_samples]``, output ``[B, C]``: one frame from the audio
  ``[anchor - window_past, anchor - window_past + window_samples)`` around each frame anchor (zero-padded at
  the edges). ``window_past`` defaults to half the window. A model with a fixed batch of 1 is fed frame by frame.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from teacher.constants import SUPPORTED_FPS, frame_anchors, num_frames
from teacher.errors import FacedistillError
from teacher.features import resample_curves
from teacher.fsutil import sha256_file


class OnnxTeacherError(FacedistillError, ValueError):
    """An ONNX teacher that cannot be used as described."""


class OnnxTeacher:
    """An ONNX speech-to-rig model with the built-in Teacher's ``predict`` / ``predict_batch`` interface."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        channel_names: list[str] | tuple[str, ...],
        fps: int,
        mode: str = "utterance",
        window_samples: int | None = None,
        window_past: int | None = None,
        threads: int = 2,
    ):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            msg = f"{self.path}: no such ONNX file"
            raise OnnxTeacherError(msg)
        if mode not in ("utterance", "window"):
            msg = f"{self.path}: mode must be 'utterance' or 'window', got {mode!r}"
            raise OnnxTeacherError(msg)
        if fps not in SUPPORTED_FPS:
            msg = f"{self.path}: fps must be one of {SUPPORTED_FPS}, got {fps}"
            raise OnnxTeacherError(msg)
        if mode == "window" and not window_samples:
            msg = f"{self.path}: mode='window' needs window_samples (the model's input length)"
            raise OnnxTeacherError(msg)
        self.mode, self._fps, self._names = mode, fps, list(channel_names)
        self.window_samples = window_samples
        self.window_past = window_past if window_past is not None else (window_samples or 0) // 2
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            msg = f"{self.path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})"
            raise OnnxTeacherError(msg) from None
        inp = self.session.get_inputs()[0]
        self._input = inp.name
        self._batched = not isinstance(inp.shape[0], int) or inp.shape[0] != 1
        settings = f"{mode}:{fps}:{window_samples}:{self.window_past}:{','.join(self._names)}"
        self.identity = hashlib.sha256(f"{sha256_file(self.path)}:{settings}".encode()).hexdigest()

    @property
    def fps(self) -> int:
        return self._fps

    @property
    def channel_names(self) -> list[str]:
        return self._names

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self._input: x.astype(np.float32)})[0], dtype=np.float32)

    def _check_channels(self, out: np.ndarray) -> None:
        if out.shape[-1] != len(self._names):
            msg = f"{self.path}: model gives {out.shape[-1]} channels, {len(self._names)} names were given"
            raise OnnxTeacherError(msg)

    def predict(self, audio: np.ndarray) -> np.ndarray:
        """Curves [num_frames(len(audio), fps), C] for one 16 kHz clip."""
        audio = np.asarray(audio, dtype=np.float32)
        n = num_frames(len(audio), self._fps)
        if self.mode == "utterance":
            out = self._run(audio[None])
            out = out.reshape(-1, out.shape[-1])
            self._check_channels(out)
            return resample_curves(out, self._fps, n, self._fps)
        w, past = self.window_samples, self.window_past
        padded = np.pad(audio, (past, w))
        starts = frame_anchors(n, self._fps)
        windows = np.stack([padded[s : s + w] for s in starts])
        if self._batched:
            out = self._run(windows)
        else:
            out = np.concatenate([self._run(win[None]) for win in windows])
        out = out.reshape(n, -1)
        self._check_channels(out)
        return out

    def predict_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        return [self.predict(a) for a in audios]
