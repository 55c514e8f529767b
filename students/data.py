"""Training data for students: a dataset split in memory, random chunks with exact anchors, whole-utterance eval.

A training chunk is ``frames`` consecutive rig frames of one utterance plus the audio they read: from
``left`` samples before the first anchor to ``right`` samples after the last one. Chunks start on the 64-sample
grid (anchors are multiples of 64), audio outside the utterance is zero -- exactly what the windowed model sees at
an utterance edge -- so ``Student.forward_full(chunk, anchors, pad=False)`` computes the same frames as inference.
Chunks have one fixed length per sampler so they batch; frames past the end of an utterance or without a label
(NaN rows) are masked out of every loss.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from teacher.constants import ANCHOR_QUANTUM, SAMPLE_RATE, frame_anchors
from teacher.dataset import Dataset, DatasetError, Phoneme
from teacher.metrics import evaluate

if TYPE_CHECKING:
    from students.model import Student


@dataclass
class Split:
    """Every utterance of a dataset split in memory; ``targets`` is labels (training) or truth (evaluation)."""

    name: str
    audio: list[np.ndarray]  # float32 [n]
    targets: list[np.ndarray]  # float32 [F, C], NaN rows = unknown
    phonemes: list[list[Phoneme]]
    fps: int
    channel_names: list[str]
    manifest_sha256: str
    # what the split holds, whatever folder it was read from: sha256 of its shards' (file, sha256) list, fps and
    # channel names (the manifest's own hash also covers its path-dependent "info")
    content_sha256: str = ""

    @property
    def frames(self) -> int:
        return sum(len(t) for t in self.targets)

    @property
    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / SAMPLE_RATE

    def target_mean(self) -> np.ndarray:
        """Per-channel mean of the known targets (the predict-the-mean baseline and the output-bias init)."""
        return np.nanmean(np.concatenate(self.targets), axis=0).astype(np.float32)


def load_split(root: str | os.PathLike, *, field: str | None = "labels") -> Split:
    """Load a dataset folder; ``field`` picks the curves used as targets ("labels" or "truth"; None = audio only,
    targets all NaN)."""
    from teacher.fsutil import sha256_file

    ds = Dataset(root)
    audio, targets, phonemes = [], [], []
    n_ch = len(ds.channel_names)
    for utt in ds:
        curves = getattr(utt, field) if field is not None else None
        if curves is None:
            curves = np.full((utt.n_frames(ds.fps), n_ch), np.nan, np.float32)
        audio.append(utt.audio.astype(np.float32))
        targets.append(np.asarray(curves, np.float32))
        phonemes.append(utt.phonemes)
    if not audio or (field is not None and all(np.isnan(t).all() for t in targets)):
        msg = f"{ds.root}: no utterance has {field!r} curves (did the labeling step run?)"
        raise DatasetError(msg)
    return Split(
        name=ds.split,
        audio=audio,
        targets=targets,
        phonemes=phonemes,
        fps=ds.fps,
        channel_names=ds.channel_names,
        manifest_sha256=sha256_file(ds.root / "manifest.json"),
        content_sha256=_content_sha256(ds),
    )


def _content_sha256(ds: Dataset) -> str:
    shards = [(e.get("file"), e.get("sha256")) for e in ds.manifest.get("shards", [])]
    text = json.dumps({"shards": shards, "fps": ds.fps, "channels": list(ds.channel_names)})
    return hashlib.sha256(text.encode()).hexdigest()


def merge_splits(splits: list[Split]) -> Split:
    """Concatenate splits that share fps and channel names (e.g. pseudo-labels of several folders)."""
    first = splits[0]
    for s in splits[1:]:
        if s.fps != first.fps or s.channel_names != first.channel_names:
            msg = f"cannot merge split {s.name!r} with {first.name!r}: different fps or channel names"
            raise DatasetError(msg)
    return Split(
        name="+".join(s.name for s in splits),
        audio=[a for s in splits for a in s.audio],
        targets=[t for s in splits for t in s.targets],
        phonemes=[p for s in splits for p in s.phonemes],
        fps=first.fps,
        channel_names=first.channel_names,
        manifest_sha256="+".join(s.manifest_sha256 for s in splits),
        content_sha256="+".join(s.content_sha256 for s in splits),
    )


@dataclass
class Batch:
    audio: torch.Tensor  # float32 [B, L]
    anchors: torch.Tensor  # int64 [B, F], relative to the chunk start
    targets: torch.Tensor  # float32 [B, F, C] (0 where masked)
    mask: torch.Tensor  # bool [B, F]

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device`` (itself when that is the CPU, where batches are built)."""
        if device.type == "cpu":
            return self
        return Batch(*(t.to(device) for t in (self.audio, self.anchors, self.targets, self.mask)))


class ChunkSampler:
    """Random fixed-length chunks of a split (see the module docstring); stateless per step for exact resume."""

    def __init__(self, split: Split, *, frames: int, left: int, right: int, augment: bool = False):
        if left % ANCHOR_QUANTUM or right % ANCHOR_QUANTUM:
            msg = f"chunk context {left}/{right} samples must be multiples of {ANCHOR_QUANTUM}"
            raise ValueError(msg)
        self.split, self.frames, self.left, self.right, self.augment = split, frames, left, right, augment
        period = frame_anchors(split.fps + frames, split.fps)  # the anchor pattern repeats every second
        span = max(int(period[k + frames - 1] - period[k]) for k in range(split.fps))
        self.length = left + span + ANCHOR_QUANTUM + right
        weights = np.array([max(1, len(t) - frames + 1) for t in split.targets], np.float64)
        self._p = weights / weights.sum()

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        n_ch = len(self.split.channel_names)
        audio = np.zeros((size, self.length), np.float32)
        anchors = np.zeros((size, self.frames), np.int64)
        targets = np.zeros((size, self.frames, n_ch), np.float32)
        mask = np.zeros((size, self.frames), bool)
        for b in range(size):
            i = int(rng.choice(len(self._p), p=self._p))
            wav, curves = self.split.audio[i], self.split.targets[i]
            k0 = int(rng.integers(0, max(1, len(curves) - self.frames + 1)))
            anc = frame_anchors(k0 + self.frames, self.split.fps)[k0:]
            start = int(anc[0]) - self.left
            lo, hi = max(0, start), min(len(wav), start + self.length)
            if hi > lo:
                audio[b, lo - start : hi - start] = wav[lo:hi]
            anchors[b] = anc - start
            rows = curves[k0 : k0 + self.frames]
            known = ~np.isnan(rows).any(axis=1)
            targets[b, : len(rows)][known] = rows[known]
            mask[b, : len(rows)] = known
            if self.augment:
                audio[b] *= 10 ** (rng.uniform(-6, 6) / 20)
                rms = float(np.sqrt(np.mean(audio[b] ** 2)) + 1e-8)
                audio[b] += rng.normal(0, rms * 10 ** (-rng.uniform(20, 40) / 20), self.length).astype(
                    np.float32
                )
        return Batch(
            torch.from_numpy(audio),
            torch.from_numpy(anchors),
            torch.from_numpy(targets),
            torch.from_numpy(mask),
        )


def utterance_windows(audio: np.ndarray, anchors: np.ndarray, model: Student) -> np.ndarray:
    """The model's input window for each anchor: audio[a - left_context : a - left_context + W], zero-padded."""
    left, width = model.left_context, model.window_samples
    padded = np.pad(np.asarray(audio, np.float32), (left, width))
    starts = np.asarray(anchors, np.int64)
    return (
        np.stack([padded[s : s + width] for s in starts]) if len(starts) else np.zeros((0, width), np.float32)
    )


@torch.no_grad()
def predict_split(model: torch.nn.Module, split: Split) -> list[np.ndarray]:
    """Whole-utterance predictions [F, C] (zero-padded edges, exactly as the windowed model would see them)."""
    was_training = model.training
    model.eval()
    preds = []
    for wav, curves in zip(split.audio, split.targets):
        anchors = torch.from_numpy(frame_anchors(len(curves), split.fps))
        preds.append(model.forward_full(torch.from_numpy(wav)[None], anchors)[0].numpy())
    model.train(was_training)
    return preds


def evaluate_student(model: torch.nn.Module, test: Split, *, mean_vector: np.ndarray | None = None) -> dict:
    """teacher.metrics.evaluate of a student on a split whose targets are ground truth."""
    preds = predict_split(model, test)
    keep = [i for i, t in enumerate(test.targets) if not np.isnan(t).any()]
    if not keep:
        msg = f"split {test.name!r}: no utterance has complete ground truth to evaluate against"
        raise DatasetError(msg)
    return evaluate(
        [preds[i] for i in keep],
        [test.targets[i] for i in keep],
        [test.phonemes[i] for i in keep],
        channel_names=test.channel_names,
        fps=test.fps,
        mean_vector=mean_vector,
    )
