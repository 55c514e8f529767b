"""The facedistill dataset format: audio + rig curves + phoneme intervals + metadata, in sharded .npz files.

Layout of a dataset folder::

    manifest.json            # written last, atomically; lists every shard with its sha256
    shards/shard-00000.npz   # each shard written atomically (temp file + rename)

A shard holds several utterances, concatenated:

    audio          int16[total_samples]        16 kHz mono PCM (value / 32767 gives float32 in [-1, 1])
    audio_offsets  int64[n + 1]
    labels         float32[total_frames, C]    training targets (ground truth for ``labeled``, teacher
                                               pseudo-labels after ``compress label``); absent rows -> NaN
    truth          float32[total_frames, C]    ground truth kept for evaluation only (NaN where unknown)
    frame_offsets  int64[n + 1]                frames per utterance = num_frames(n_samples, fps)
    meta           JSON string: list of per-utterance dicts (id, voice, language, text, source, augment, ...,
                   and "phonemes": [[start_sample, end_sample, phoneme, viseme], ...])

``manifest.json`` keys: format, version, name, split, sample_rate, fps, channel_names, has_labels, has_truth,
label_source, shards (list of {file, sha256, utterances, frames, seconds}), totals, and free-form ``info``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teacher.constants import SAMPLE_RATE, num_frames
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_path, atomic_write_json, sha256_file

FORMAT_NAME = "facedistill-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class DatasetError(FacedistillError, ValueError):
    """A dataset folder or shard that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Phoneme:
    start: int  # first sample (16 kHz)
    end: int  # one past the last sample
    phoneme: str  # synthesiser's symbol
    viseme: str  # viseme class (see teacher.groundtruth)


@dataclass
class Utterance:
    id: str
    audio: np.ndarray  # float32 [n_samples], 16 kHz, in [-1, 1]
    labels: np.ndarray | None = None  # float32 [n_frames, C] training targets
    truth: np.ndarray | None = None  # float32 [n_frames, C] ground truth for evaluation only
    phonemes: list[Phoneme] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def n_frames(self, fps: int) -> int:
        return num_frames(len(self.audio), fps)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def write_shard(path: str | os.PathLike, utterances: list[Utterance], *, fps: int, n_channels: int) -> dict:
    """Write ``utterances`` to one shard atomically; returns its manifest entry (without the folder)."""
    path = Path(path)
    if not utterances:
        msg = f"{path}: refusing to write an empty shard"
        raise DatasetError(msg)
    audio_parts, lab_parts, tru_parts, metas = [], [], [], []
    a_off, f_off = [0], [0]
    for utt in utterances:
        audio = np.asarray(utt.audio, dtype=np.float32)
        pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        frames = num_frames(len(pcm), fps)
        for name, arr in (("labels", utt.labels), ("truth", utt.truth)):
            if arr is not None and arr.shape != (frames, n_channels):
                msg = f"{path}: utterance {utt.id} {name} shape {arr.shape} != ({frames}, {n_channels})"
                raise DatasetError(msg)
        nan = np.full((frames, n_channels), np.nan, dtype=np.float32)
        audio_parts.append(pcm)
        lab_parts.append(nan if utt.labels is None else utt.labels.astype(np.float32))
        tru_parts.append(nan if utt.truth is None else utt.truth.astype(np.float32))
        a_off.append(a_off[-1] + len(pcm))
        f_off.append(f_off[-1] + frames)
        meta = dict(utt.meta)
        meta["id"] = utt.id
        meta["phonemes"] = [[p.start, p.end, p.phoneme, p.viseme] for p in utt.phonemes]
        metas.append(meta)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                audio=np.concatenate(audio_parts),
                audio_offsets=np.asarray(a_off, dtype=np.int64),
                labels=np.concatenate(lab_parts),
                truth=np.concatenate(tru_parts),
                frame_offsets=np.asarray(f_off, dtype=np.int64),
                meta=np.asarray(json.dumps(metas, ensure_ascii=False)),
            )
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "utterances": len(utterances),
        "frames": int(f_off[-1]),
        "seconds": a_off[-1] / SAMPLE_RATE,
    }


def read_shard(path: str | os.PathLike) -> list[Utterance]:
    """Read every utterance of one shard (NaN-filled label/truth blocks come back as None)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            audio, a_off = z["audio"], z["audio_offsets"]
            labels, truth, f_off = z["labels"], z["truth"], z["frame_offsets"]
            metas = json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError, EOFError) as exc:
        msg = f"{path}: not a readable facedistill shard ({exc})"
        raise DatasetError(msg) from None
    out = []
    for i, meta in enumerate(metas):
        lab = labels[f_off[i] : f_off[i + 1]]
        tru = truth[f_off[i] : f_off[i + 1]]
        phonemes = [Phoneme(int(s), int(e), str(p), str(v)) for s, e, p, v in meta.pop("phonemes", [])]
        out.append(
            Utterance(
                id=str(meta.pop("id")),
                audio=audio[a_off[i] : a_off[i + 1]].astype(np.float32) / 32767.0,
                labels=None if np.isnan(lab).all() else lab,
                truth=None if np.isnan(tru).all() else tru,
                phonemes=phonemes,
                meta=meta,
            )
        )
    return out


def write_manifest(
    root: str | os.PathLike,
    entries: list[dict],
    *,
    name: str,
    split: str,
    fps: int,
    channel_names: Iterable[str],
    has_labels: bool,
    has_truth: bool,
    label_source: str,
    info: dict | None = None,
) -> dict:
    entries = sorted(entries, key=lambda e: e["file"])
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": name,
        "split": split,
        "sample_rate": SAMPLE_RATE,
        "fps": fps,
        "channel_names": list(channel_names),
        "has_labels": has_labels,
        "has_truth": has_truth,
        "label_source": label_source,
        "shards": entries,
        "totals": {
            "utterances": sum(e["utterances"] for e in entries),
            "frames": sum(e["frames"] for e in entries),
            "seconds": sum(e["seconds"] for e in entries),
        },
        "info": info or {},
    }
    atomic_write_json(Path(root) / MANIFEST, manifest)
    return manifest


class Dataset:
    """A dataset folder opened through its manifest."""

    def __init__(self, root: str | os.PathLike, *, verify: bool = False):
        self.root = Path(root)
        mpath = self.root / MANIFEST
        if not mpath.is_file():
            msg = f"{mpath}: no dataset manifest here (build one with `compress corpus build` or `compress label`)"
            raise DatasetError(msg)
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            msg = f"{mpath}: manifest is not valid JSON ({exc})"
            raise DatasetError(msg) from None
        if self.manifest.get("format") != FORMAT_NAME:
            msg = f"{mpath}: not a {FORMAT_NAME} manifest"
            raise DatasetError(msg)
        if self.manifest.get("version") != FORMAT_VERSION:
            msg = f"{mpath}: unsupported dataset version {self.manifest.get('version')}"
            raise DatasetError(msg)
        if verify:
            self.verify()

    @property
    def fps(self) -> int:
        return int(self.manifest["fps"])

    @property
    def channel_names(self) -> list[str]:
        return list(self.manifest["channel_names"])

    @property
    def split(self) -> str:
        return str(self.manifest["split"])

    @property
    def seconds(self) -> float:
        return float(self.manifest["totals"]["seconds"])

    def shard_paths(self) -> list[Path]:
        return [self.root / "shards" / e["file"] for e in self.manifest["shards"]]

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest."""
        for entry in self.manifest["shards"]:
            path = self.root / "shards" / entry["file"]
            if not path.is_file():
                msg = f"{path}: shard listed in the manifest is missing"
                raise DatasetError(msg)
            if sha256_file(path) != entry["sha256"]:
                msg = f"{path}: checksum mismatch with {self.root / MANIFEST} (corrupt or modified shard)"
                raise DatasetError(msg)

    def __iter__(self) -> Iterator[Utterance]:
        for path in self.shard_paths():
            yield from read_shard(path)

    def utterances(self) -> list[Utterance]:
        return list(self)

    def __len__(self) -> int:
        return int(self.manifest["totals"]["utterances"])
