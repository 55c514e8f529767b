"""Atomic writes: all or nothing, no temporary files left behind, ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from teacher.fsutil import atomic_path, atomic_write_json


def test_atomic_write_is_all_or_nothing_with_umask_permissions(tmp_path):
    target = tmp_path / "out" / "card.json"
    atomic_write_json(target, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'  # the old content survives a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["card.json"]  # and no temporary file is left
