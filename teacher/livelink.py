"""Rig curves in and out as CSV: Epic's Live Link Face takes, plain N-channel rig tables, and studio imports.

Live Link Face CSV (what the iPhone app exports)::

    Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,...,RightEyeRoll
    14:03:52:28.207,61,0.0123,...

``Timecode`` is ``HH:MM:SS:FF`` with ``FF`` counted at the capture fps (30 or 60) and an optional ``.sss`` sub-frame
fraction; ``BlendShapeCount`` is 61 (52 ARKit shapes + 9 head/eye rotations). The app names shapes in PascalCase and
lists ``JawRight`` before ``JawLeft`` and ``MouthRight`` before ``MouthLeft``: columns are matched by name
(case-insensitive), never by position. Head and eye rotations are not speech-driven: they are read past and
written as 0.

Rig CSV (any rig, any channel names): a ``time`` column in seconds, then one column per channel.

Reading returns the rows as captured with their times; ``resample_to_frames`` moves them onto the dataset frame grid
(``teacher.constants.frame_times``, the 4 ms-quantised anchors) by linear interpolation. Writing a Live Link CSV puts
dataset frame ``k`` at timecode frame ``k`` (consumers index by ``FF``; the anchor lies within 2 ms of ``k / fps``);
a rig CSV writes the exact anchor times.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from teacher.audio import AUDIO_SUFFIXES, AudioError, load_audio
from teacher.constants import ARKIT_52, SAMPLE_RATE, SUPPORTED_FPS, frame_times, num_frames
from teacher.dataset import Utterance, shard_name, write_manifest, write_shard
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_write_text

# Live Link Face's own column order (differs from ARKIT_52 around JawLeft/JawRight and MouthLeft/MouthRight).
LIVELINK_SHAPES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose",
    "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight",
    "MouthFrownLeft", "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft",
    "MouthStretchRight", "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft",
    "MouthUpperUpRight", "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)  # fmt: skip
LIVELINK_ROTATIONS = (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
LIVELINK_HEADER = ("Timecode", "BlendShapeCount", *LIVELINK_SHAPES, *LIVELINK_ROTATIONS)
BLENDSHAPE_COUNT = len(LIVELINK_SHAPES) + len(LIVELINK_ROTATIONS)  # 61, as the app writes it
MAX_DURATION_MISMATCH_S = 0.5  # an imported CSV must cover its audio to within this
_TIMECODE = re.compile(r"^\s*(\d+):(\d{2}):(\d{2})[:;](\d+)(\.\d+)?\s*$")

assert len(LIVELINK_SHAPES) == 52 and {n.lower() for n in LIVELINK_SHAPES} == {n.lower() for n in ARKIT_52}


class CurveFileError(FacedistillError, ValueError):
    """A CSV of rig curves that cannot be used; the message names the file, row and column."""


class RigCurves(NamedTuple):
    curves: np.ndarray  # float32 [N, C], one row per CSV row
    fps: int  # capture fps (Live Link) or the fps asked for / inferred (rig CSV)
    channel_names: list[str]
    times: np.ndarray  # float64 [N], seconds since the first row


def _fail(path: Path, problem: str) -> CurveFileError:
    msg = f"{path}: {problem}"
    return CurveFileError(msg)


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise _fail(path, f"not a readable text CSV ({exc})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not rows:
        raise _fail(path, "empty CSV (no header)")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise _fail(path, "CSV has a header but no data rows")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise _fail(path, f"row {i} has {len(row)} fields, the header has {len(header)}")
    return header, body


def _column(path: Path, header: list[str], body: list[list[str]], col: int) -> np.ndarray:
    out = np.empty(len(body), dtype=np.float64)
    for i, row in enumerate(body):
        try:
            out[i] = float(row[col])
        except ValueError:
            raise _fail(path, f"row {i + 2} column {header[col]!r}: {row[col]!r} is not a number") from None
        if not np.isfinite(out[i]):
            raise _fail(path, f"row {i + 2} column {header[col]!r}: {row[col]!r} is not finite")
    return out


def _check_increasing(path: Path, times: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        raise _fail(path, f"row {bad[0] + 3}: {what} does not increase after row {bad[0] + 2}")


def parse_timecode(text: str, fps: int) -> float:
    """``HH:MM:SS:FF[.sss]`` to a frame count at ``fps`` (sub-frame fraction included)."""
    m = _TIMECODE.match(text)
    if not m:
        msg = f"{text!r} is not a HH:MM:SS:FF timecode"
        raise ValueError(msg)
    h, mi, s, ff = (int(g) for g in m.groups()[:4])
    if ff >= fps:
        msg = f"frame field {ff} in {text!r} is not below {fps} fps"
        raise ValueError(msg)
    return ((h * 60 + mi) * 60 + s) * fps + ff + (float(m.group(5)) if m.group(5) else 0.0)


def format_timecode(frame: int, fps: int) -> str:
    """Frame count at ``fps`` to ``HH:MM:SS:FF.000``."""
    seconds, ff = divmod(int(frame), fps)
    minutes, s = divmod(seconds, 60)
    h, mi = divmod(minutes, 60)
    return f"{h:02d}:{mi:02d}:{s:02d}:{ff:02d}.000"


def _infer_fps(path: Path, timecodes: list[str]) -> int:
    """The capture fps from the largest FF field: 60 if any reaches 30, else 30."""
    max_ff = 0
    for i, tc in enumerate(timecodes):
        m = _TIMECODE.match(tc)
        if not m:
            raise _fail(path, f"row {i + 2} column 'Timecode': {tc!r} is not a HH:MM:SS:FF timecode")
        max_ff = max(max_ff, int(m.group(4)))
    return 60 if max_ff >= 30 else 30


def read_livelink_csv(
    path: str | os.PathLike, *, fps: int | None = None, channel_names: Sequence[str] = ARKIT_52
) -> RigCurves:
    """Read a Live Link Face CSV: the ``channel_names`` curves (ARKit order by default) of every row, with times.

    ``fps`` is the capture fps the ``FF`` field counts in; None infers it (60 if any FF >= 30, else 30), which can
    mistake a 60 fps take shorter than half a second for 30 fps: pass it when known.
    """
    path = Path(path)
    header, body = _read_table(path)
    lower = {h.lower(): i for i, h in enumerate(header)}
    if "timecode" not in lower:
        raise _fail(path, "no 'Timecode' column: not a Live Link Face CSV (a rig CSV starts with 'time')")
    missing = [n for n in channel_names if n.lower() not in lower]
    if missing:
        raise _fail(
            path,
            f"missing blendshape columns {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""),
        )
    tc_col = lower["timecode"]
    timecodes = [row[tc_col] for row in body]
    fps = _infer_fps(path, timecodes) if fps is None else int(fps)
    frames = np.empty(len(body), dtype=np.float64)
    for i, tc in enumerate(timecodes):
        try:
            frames[i] = parse_timecode(tc, fps)
        except ValueError as exc:
            raise _fail(path, f"row {i + 2} column 'Timecode': {exc}") from None
    _check_increasing(path, frames, "Timecode")
    curves = np.stack([_column(path, header, body, lower[n.lower()]) for n in channel_names], axis=1)
    return RigCurves(curves.astype(np.float32), fps, list(channel_names), (frames - frames[0]) / fps)


def write_livelink_csv(
    path: str | os.PathLike,
    curves: np.ndarray,
    *,
    fps: int,
    channel_names: Sequence[str] = ARKIT_52,
    start_timecode: str = "00:00:00:00",
) -> None:
    """Write [F, 52] curves as a Live Link Face CSV (row k at timecode start + k frames), atomically."""
    path = Path(path)
    curves = np.asarray(curves, dtype=np.float32)
    by_name = {n.lower(): i for i, n in enumerate(channel_names)}
    missing = [n for n in LIVELINK_SHAPES if n.lower() not in by_name]
    if missing or curves.ndim != 2 or curves.shape[1] != len(channel_names):
        msg = f"{path}: Live Link Face needs the 52 ARKit curves; got shape {curves.shape}, missing {missing[:5]}"
        raise CurveFileError(msg)
    try:
        start = parse_timecode(start_timecode, fps)
    except ValueError as exc:
        raise _fail(path, f"start timecode: {exc}") from None
    order = [by_name[n.lower()] for n in LIVELINK_SHAPES]
    zeros = ",".join(["0"] * len(LIVELINK_ROTATIONS))
    lines = [",".join(LIVELINK_HEADER)]
    for k, row in enumerate(curves[:, order]):
        values = ",".join(f"{v:.6f}" for v in row)
        lines.append(f"{format_timecode(int(start) + k, fps)},{BLENDSHAPE_COUNT},{values},{zeros}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_rig_csv(path: str | os.PathLike, *, fps: int | None = None) -> RigCurves:
    """Read a rig CSV (``time`` in seconds + any named channels); ``fps`` None infers it from the mean step."""
    path = Path(path)
    header, body = _read_table(path)
    lower = [h.lower() for h in header]
    if "time" not in lower:
        raise _fail(path, "no 'time' column (seconds): a rig CSV is 'time,<channel>,<channel>,...'")
    t_col = lower.index("time")
    names = [h for i, h in enumerate(header) if i != t_col]
    if not names:
        raise _fail(path, "no channel columns besides 'time'")
    if len(set(names)) != len(names):
        raise _fail(path, "duplicate channel names in the header")
    times = _column(path, header, body, t_col)
    _check_increasing(path, times, "time")
    if fps is None:
        if len(times) < 2:
            raise _fail(path, "one row only: pass fps explicitly")
        fps = int(round((len(times) - 1) / float(times[-1] - times[0])))
    curves = np.stack([_column(path, header, body, i) for i in range(len(header)) if i != t_col], axis=1)
    return RigCurves(curves.astype(np.float32), int(fps), names, times - times[0])


def write_rig_csv(
    path: str | os.PathLike, curves: np.ndarray, *, fps: int, channel_names: Sequence[str]
) -> None:
    """Write [F, C] dataset curves as ``time,<channels>``; times are the exact frame anchors. Atomic."""
    path = Path(path)
    curves = np.asarray(curves, dtype=np.float32)
    names = list(channel_names)
    if curves.ndim != 2 or curves.shape[1] != len(names):
        raise _fail(path, f"curves of shape {curves.shape} do not match {len(names)} channel names")
    if any(n.lower() == "time" or "," in n for n in names):
        raise _fail(path, "channel names may not be 'time' or contain commas")
    times = frame_times(len(curves), fps)
    lines = [",".join(["time", *names])]
    lines += [f"{t:.6f}," + ",".join(f"{v:.6f}" for v in row) for t, row in zip(times, curves)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_curves_csv(path: str | os.PathLike, *, fps: int | None = None) -> RigCurves:
    """Either CSV kind, told apart by the first header cell (``Timecode`` or ``time``)."""
    path = Path(path)
    header, _ = _read_table(path)
    if any(h.lower() == "timecode" for h in header):
        return read_livelink_csv(path, fps=fps)
    return read_rig_csv(path, fps=fps)


def resample_to_frames(times: np.ndarray, curves: np.ndarray, n_frames: int, fps: int) -> np.ndarray:
    """Linear interpolation of rows at ``times`` (s) onto the dataset frame grid; edges hold their value."""
    grid = frame_times(n_frames, fps)
    curves = np.asarray(curves, dtype=np.float64)
    out = np.stack([np.interp(grid, times, curves[:, c]) for c in range(curves.shape[1])], axis=1)
    return out.astype(np.float32)


def _pairs_in(folder: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    pairs, errors = [], []
    audio = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    stems = {p.with_suffix("") for p in audio}
    for a in audio:
        c = a.with_suffix(".csv")
        if c.is_file():
            pairs.append((a, c))
        else:
            errors.append(f"{a}: no matching {c.name} beside it")
    for c in sorted(folder.rglob("*.csv")):
        if c.with_suffix("") not in stems:
            errors.append(f"{c}: no matching audio file (.wav/.flac/.ogg) beside it")
    return pairs, errors


def import_labeled(
    pairs_or_folder: str | os.PathLike | Iterable[tuple[str | os.PathLike, str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    fps: int,
    csv_fps: int | None = None,
    shard_utterances: int = 64,
) -> tuple[dict, list[str]]:
    """Turn ``name.wav`` + ``name.csv`` captures into a labeled dataset (labels = truth = captured curves).

    Curves are resampled onto the dataset frame grid at ``fps``; phonemes are empty. A bad pair is skipped and its
    one-line error returned, the others are imported. Returns (manifest, errors).
    """
    if fps not in SUPPORTED_FPS:
        msg = f"{out_dir}: fps {fps} is not one of {SUPPORTED_FPS}"
        raise CurveFileError(msg)
    if isinstance(pairs_or_folder, str | os.PathLike):
        folder = Path(pairs_or_folder)
        if not folder.is_dir():
            msg = f"{folder}: no such folder of name.wav + name.csv pairs"
            raise CurveFileError(msg)
        pairs, errors = _pairs_in(folder)
    else:
        pairs, errors = [(Path(a), Path(c)) for a, c in pairs_or_folder], []
    utterances: list[Utterance] = []
    names: list[str] | None = None
    for audio_path, csv_path in pairs:
        try:
            audio = load_audio(audio_path)
            take = read_curves_csv(csv_path, fps=csv_fps)
        except (AudioError, CurveFileError) as exc:
            errors.append(str(exc))
            continue
        if names is None:
            names = take.channel_names
        if take.channel_names != names:
            errors.append(
                f"{csv_path}: channels differ from the first take's ({len(take.channel_names)} vs {len(names)})"
            )
            continue
        seconds = len(audio) / SAMPLE_RATE
        covered = float(take.times[-1]) + 1.0 / take.fps
        if abs(covered - seconds) > MAX_DURATION_MISMATCH_S:
            errors.append(
                f"{csv_path}: curves cover {covered:.2f} s but {audio_path.name} lasts {seconds:.2f} s"
            )
            continue
        curves = resample_to_frames(take.times, take.curves, num_frames(len(audio), fps), fps)
        meta = {"source": "capture", "audio_file": str(audio_path), "curve_file": str(csv_path)}
        utterances.append(Utterance(id=audio_path.stem, audio=audio, labels=curves, truth=curves, meta=meta))
    if not utterances:
        msg = f"{out_dir}: nothing imported ({len(errors)} errors; first: {errors[0] if errors else 'no pairs found'})"
        raise CurveFileError(msg)
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        msg = f"{out_dir}: two captures share a file name; names become utterance ids and must be unique"
        raise CurveFileError(msg)
    out = Path(out_dir)
    entries = []
    for i in range(0, len(utterances), shard_utterances):
        chunk = utterances[i : i + shard_utterances]
        path = out / "shards" / shard_name(i // shard_utterances)
        entries.append(write_shard(path, chunk, fps=fps, n_channels=len(names)))
    manifest = write_manifest(
        out,
        entries,
        name=out.name,
        split="labeled",
        fps=fps,
        channel_names=names,
        has_labels=True,
        has_truth=True,
        label_source="capture",
        info={"imported_from": [str(a) for a, _ in pairs], "skipped": errors},
    )
    return manifest, errors
