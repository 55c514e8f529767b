"""Atomic writes: all or nothing, no temporary files left behind, ordinary file permissions."""

from __future__ import annotations

import os
import stat
import time

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


def test_sweep_removes_only_stale_temps_a_killed_writer_left(tmp_path):
    from teacher.fsutil import sweep_stale_temps

    (tmp_path / "binaries").mkdir()
    stale = tmp_path / "binaries" / ".tiny.int8.tflite.abc123.tmp"  # the name atomic_path gives a temp
    live = tmp_path / ".shard-0007.npz.def456.tmp"  # another process is writing it right now
    kept = [tmp_path / "binaries" / "tiny.int8.tflite", tmp_path / ".hidden-but-not-temp"]
    for f in (stale, live, *kept):
        f.write_bytes(b"x")
    old = time.time() - 2 * 3600
    for f in (stale, kept[0], kept[1]):
        os.utime(f, (old, old))
    assert sweep_stale_temps(tmp_path) == 1
    assert not stale.exists() and live.exists() and all(f.exists() for f in kept)
    assert sweep_stale_temps(tmp_path / "missing") == 0


def test_config_matches_reads_keys_added_since_saving_as_their_defaults():
    from dataclasses import asdict, dataclass

    from teacher.fsutil import config_matches

    @dataclass(frozen=True)
    class Config:
        lr: float = 1e-3
        hinge: float = 0.0  # an option added after some configs were saved

        def to_dict(self):
            return asdict(self)

        @classmethod
        def from_dict(cls, d):
            if d.get("lr", 1e-3) <= 0:
                raise ValueError("lr")
            return cls(**d)

    assert config_matches(Config(), {"lr": 1e-3}, (ValueError, TypeError))  # saved before `hinge` existed
    assert not config_matches(Config(hinge=0.1), {"lr": 1e-3}, (ValueError, TypeError))
    assert not config_matches(Config(), {"lr": 1e-3, "gone": 1}, (ValueError, TypeError))  # unknown key
    assert not config_matches(Config(), {"lr": -1.0}, (ValueError, TypeError))  # rejected by from_dict
    assert not config_matches(Config(), None, (ValueError,))
