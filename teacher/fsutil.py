"""Atomic writes and content hashes: nothing facedistill writes is ever seen half-written."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back (at import, before any thread starts)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600; a written artifact gets the permissions any other new file would get
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


STALE_TEMP_SECONDS = 3600.0  # no facedistill write keeps its temp file open this long


def sweep_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temp files ``atomic_path`` left under ``folder`` (recursively) when a process was killed mid-write;
    returns how many. Only ``.NAME.*.tmp`` files untouched for ``older_than_s`` go, so a live writer beside this
    process (another ``--shard``) keeps its own."""
    root, now, removed = Path(folder), time.time(), 0
    if not root.is_dir():
        return 0
    for tmp in root.rglob(".*.tmp"):
        try:
            if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # its writer finished or another sweep got it first
            continue
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    msg = f"cannot serialise {type(obj).__name__} to JSON"
    raise TypeError(msg)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_matches(config: Any, saved: object, errors: tuple[type[BaseException], ...]) -> bool:
    """Whether ``saved`` (a config dict read from a card or checkpoint) describes ``config``, a dataclass config with
    ``from_dict``/``to_dict``: the saved dict is rebuilt through ``from_dict``, so keys added to the config class
    since it was saved read as their defaults and an upgrade that adds an option (at its neutral default) does not
    invalidate finished work. A dict that ``from_dict`` rejects with one of ``errors`` does not match."""
    if not isinstance(saved, dict):
        return False
    try:
        return type(config).from_dict(saved).to_dict() == config.to_dict()
    except errors:
        return False
