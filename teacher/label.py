"""Pseudo-label audio with a teacher: resumable, shardable, and free to rerun.

``pseudo_label(source, out_dir, teacher=...)`` reads either a dataset folder (each input shard is one *work
unit*) or a folder of audio files (every ``files_per_unit`` files, sorted, are one unit) and writes a dataset
in the same format whose ``labels`` are the teacher's curves (resampled to the dataset's frame grid); ground
truth is carried over when the source has it and the channel names match.

Each unit's output shard is written atomically and named from the unit's position, the unit's content hash
and the teacher's hash (``shard-00003-<unit>-<teacher>.npz``): a rerun skips every shard already there, so a
``kill -9`` at any moment loses at most the unit in flight, and relabeling with the same teacher is free. The
manifest is written (merged from every finished shard) by whichever run finds all units done, or by
``compress label ... --merge``.

Across processes or machines: give each process ``--shard i/n`` (it takes units ``i, i+n, i+2n, ...``), all
writing to one ``--out`` folder on a shared filesystem, e.g. ``torchrun --nproc-per-node 8`` with
``--shard $RANK/$WORLD_SIZE``, or a Slurm array ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``;
then run the same command once more with ``--merge`` to write the manifest.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from teacher.audio import iter_audio_files, load_many
from teacher.dataset import (
    MANIFEST,
    Dataset,
    DatasetError,
    Utterance,
    read_shard,
    write_manifest,
    write_shard,
)
from teacher.features import resample_curves
from teacher.fsutil import sha256_file, sweep_stale_temps


class LabelingTeacher(Protocol):
    """What ``pseudo_label`` needs from a teacher (the built-in ``Teacher`` and ``OnnxTeacher`` both fit)."""

    identity: str

    @property
    def fps(self) -> int: ...

    @property
    def channel_names(self) -> list[str]: ...

    def predict_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class LabelConfig:
    """Which part of the work this process does and how it batches."""

    shard: tuple[int, int] = (0, 1)  # (i, n): this process labels units i, i + n, ...
    files_per_unit: int = 64  # audio-folder sources: files per work unit
    batch_size: int = 32  # clips per teacher call
    merge_only: bool = False  # label nothing; write the manifest (refuses if units are missing)
    version: int = 1

    def __post_init__(self):
        object.__setattr__(self, "shard", tuple(self.shard))
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            msg = f"LabelConfig.shard must be (i, n) with 0 <= i < n, got {self.shard}"
            raise ValueError(msg)
        if self.files_per_unit < 1 or self.batch_size < 1:
            msg = "LabelConfig: files_per_unit and batch_size must be >= 1"
            raise ValueError(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shard"] = list(self.shard)
        return d


@dataclass(frozen=True)
class _Unit:
    index: int
    key: str  # content hash of the unit's input
    shard: Path | None = None  # dataset source
    files: tuple[Path, ...] = ()  # audio-folder source


def _plan(source: Path, config: LabelConfig) -> tuple[list[_Unit], Dataset | None]:
    if (source / MANIFEST).is_file():
        ds = Dataset(source)
        units = [
            _Unit(i, e["sha256"], shard=source / "shards" / e["file"])
            for i, e in enumerate(ds.manifest["shards"])
        ]
        return units, ds
    files = iter_audio_files(source)
    if not files:
        msg = f"{source}: no dataset manifest and no audio files (wav/flac/ogg) here"
        raise DatasetError(msg)
    units = []
    for u, s in enumerate(range(0, len(files), config.files_per_unit)):
        group = tuple(files[s : s + config.files_per_unit])
        h = hashlib.sha256()
        for f in group:
            h.update(
                f"{f.relative_to(source) if f.is_relative_to(source) else f}:{sha256_file(f)}\n".encode()
            )
        units.append(_Unit(u, h.hexdigest(), files=group))
    return units, None


def _out_name(unit: _Unit, teacher_id: str) -> str:
    return f"shard-{unit.index:05d}-{unit.key[:12]}-{teacher_id[:12]}.npz"


def _load_unit(unit: _Unit, source: Path) -> list[Utterance]:
    if unit.shard is not None:
        return read_shard(unit.shard)
    loaded, errors = load_many(unit.files)
    for err in errors:
        print(f"label: skipping {err}", file=sys.stderr)
    return [
        Utterance(
            id=str(p.relative_to(source) if p.is_relative_to(source) else p), audio=a, meta={"source": str(p)}
        )
        for p, a in loaded
    ]


def _entry(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        a_off, f_off = z["audio_offsets"], z["frame_offsets"]
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "utterances": len(a_off) - 1,
        "frames": int(f_off[-1]),
        "seconds": float(a_off[-1]) / 16000,
    }


def pseudo_label(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    teacher: LabelingTeacher,
    config: LabelConfig = LabelConfig(),
) -> dict | None:
    """Label this process's units of ``source`` into ``out_dir``; returns the manifest once all units are done."""
    source, out = Path(source), Path(out_dir)
    units, ds = _plan(source, config)
    fps = ds.fps if ds is not None else teacher.fps
    names = teacher.channel_names
    keep_truth = ds is not None and ds.channel_names == names
    tid = teacher.identity
    i, n = config.shard
    todo = [u for u in units[i::n] if not (out / "shards" / _out_name(u, tid)).is_file()]
    sweep_stale_temps(
        out
    )  # a killed labeler's half-written shard (age-gated: live shards beside it are kept)
    if todo and not config.merge_only:
        t0, seconds = time.time(), 0.0
        bar = tqdm(todo, desc=f"label {i}/{n}", unit="unit", file=sys.stderr)
        for unit in bar:
            utts = _load_unit(unit, source)
            if not utts:
                continue
            preds = []
            for s in range(0, len(utts), config.batch_size):
                preds.extend(teacher.predict_batch([u.audio for u in utts[s : s + config.batch_size]]))
            for u, p in zip(utts, preds):
                u.labels = np.clip(resample_curves(p, teacher.fps, u.n_frames(fps), fps), 0.0, 1.0)
                if not keep_truth:
                    u.truth = None
                u.meta["label_source"] = f"teacher:{tid[:12]}"
            write_shard(out / "shards" / _out_name(unit, tid), utts, fps=fps, n_channels=len(names))
            seconds += sum(u.seconds for u in utts)
            bar.set_postfix(audio_s_per_s=f"{seconds / max(time.time() - t0, 1e-9):.1f}")
        bar.close()
        wall = time.time() - t0
        print(
            f"label: {len(todo)} units, {seconds:.1f} s of audio in {wall:.1f} s "
            f"({seconds / max(wall, 1e-9):.1f} s audio / s)",
            file=sys.stderr,
        )
    done = [out / "shards" / _out_name(u, tid) for u in units]
    missing = sum(not p.is_file() for p in done)
    if missing:
        if config.merge_only:
            msg = f"{out}: {missing} of {len(units)} units not labeled yet (run the --shard i/n jobs first)"
            raise DatasetError(msg)
        print(
            f"label: {missing} of {len(units)} units left for other shards; merge when all are done",
            file=sys.stderr,
        )
        return None
    return write_manifest(
        out,
        [_entry(p) for p in done],
        name=f"pseudo-{source.name}",
        split=ds.split if ds is not None else "unlabeled",
        fps=fps,
        channel_names=names,
        has_labels=True,
        has_truth=keep_truth and bool(ds.manifest.get("has_truth")),
        label_source=f"teacher:{tid}",
        info={"source": str(source), "teacher": tid, "units": len(units)},
    )
