"""Audio in and out: any WAV/FLAC/OGG becomes float32 mono 16 kHz in [-1, 1], or one clear error line.

Every file a user brings (a studio's recordings, a folder to pseudo-label) enters through ``load_audio``, so the
checks live here once: missing, empty, not audio, truncated, NaN/Inf, silent, too long. Batches use ``load_many``,
which keeps going past a bad file and returns its error line instead.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from teacher.constants import MAX_AUDIO_SECONDS, SAMPLE_RATE
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SILENCE_PEAK = 1e-4  # a file whose peak |sample| is below this (-80 dBFS) is refused as silent


class AudioError(FacedistillError, ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


def _fail(path: Path, problem: str) -> AudioError:
    msg = f"{path}: {problem}"
    return AudioError(msg)


def _wav_missing_bytes(path: Path) -> int:
    """Bytes the WAV ``data`` chunk declares but the file lacks (0 if complete or not a plain RIFF WAV)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size == 0xFFFFFFFF:  # streaming writers leave the size open
                    return 0
                return max(0, pos + 8 + chunk_size - size)
            pos += 8 + chunk_size + (chunk_size & 1)
    return 0


def load_audio(path: str | os.PathLike, *, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """Read WAV/FLAC/OGG, mix to mono, resample to 16 kHz (soxr VHQ); float32 in [-1, 1].

    Raises AudioError (one line naming the file) for a missing, empty, non-audio, truncated, NaN/Inf, silent
    (peak < SILENCE_PEAK) or too long (> ``max_seconds``, judged from the header before decoding) file.
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        if path.suffix.lower() in AUDIO_SUFFIXES:
            raise _fail(
                path, f"not a readable {path.suffix.lower()[1:].upper()} audio file ({exc})"
            ) from None
        supported = ", ".join(AUDIO_SUFFIXES)
        raise _fail(
            path, f"unsupported or non-audio file (supported: {supported}; convert with ffmpeg)"
        ) from None
    missing = _wav_missing_bytes(path)
    if missing:
        raise _fail(path, f"truncated WAV: header declares {missing} more data bytes than the file holds")
    if info.frames <= 0 or info.samplerate <= 0:
        raise _fail(path, "zero-length audio (no samples)")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise _fail(path, f"{seconds:.1f} s is longer than the {max_seconds:g} s limit (split it into parts)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise _fail(path, f"truncated or corrupt audio ({exc})") from None
    if len(data) < info.frames:
        raise _fail(path, f"truncated audio: header declares {info.frames} frames, only {len(data)} readable")
    if not np.isfinite(data).all():
        raise _fail(path, "contains NaN or Inf samples")
    mono = data.mean(axis=1, dtype=np.float64)
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="VHQ")
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32)
    if len(mono) == 0:
        raise _fail(path, "zero-length audio (no samples)")
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise _fail(path, f"silent (peak {peak:.2g} < {SILENCE_PEAK:g})")
    return mono


def load_many(
    paths: Iterable[str | os.PathLike], *, max_seconds: float = MAX_AUDIO_SECONDS
) -> tuple[list[tuple[Path, np.ndarray]], list[str]]:
    """Load every file it can; a bad file adds its one-line error and the batch goes on."""
    loaded, errors = [], []
    for p in paths:
        try:
            loaded.append((Path(p), load_audio(p, max_seconds=max_seconds)))
        except AudioError as exc:
            errors.append(str(exc))
    return loaded, errors


def iter_audio_files(folder_or_manifest: str | os.PathLike) -> list[Path]:
    """Audio files of a folder (recursive, sorted) or of a text manifest (one path per line, relative to it)."""
    root = Path(folder_or_manifest)
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if root.is_file():
        lines = [ln.strip() for ln in root.read_text().splitlines()]
        return [(root.parent / ln) for ln in lines if ln and not ln.startswith("#")]
    msg = f"{root}: no such folder or manifest"
    raise AudioError(msg)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono float audio as 16-bit PCM WAV, atomically."""
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, sr, subtype="PCM_16", format="WAV")
