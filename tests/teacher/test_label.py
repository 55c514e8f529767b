"""Pseudo-labeling: kill -9 mid-run and rerun gives the same dataset; shards split and merge; audio folders work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synth_teacher_data import make_dataset

from teacher.audio import save_wav
from teacher.dataset import Dataset, DatasetError
from teacher.label import LabelConfig, pseudo_label
from teacher.model import Teacher, TeacherConfig, TeacherDecoder


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = TeacherConfig(features="logmel", conv_channels=16, gru_hidden=16, gru_layers=1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    from teacher.encoder import EncoderConfig

    torch.save({"config": config.to_dict(), "encoder": EncoderConfig().to_dict(),
                "state_dict": TeacherDecoder(config).state_dict()}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("src") / "unlabeled", n_shards=5, per_shard=3, seed=3,
                        split="unlabeled", labels=False)  # fmt: skip


SLOW_LABEL = """
import sys, time
from teacher.label import pseudo_label
from teacher.model import Teacher

class Slow(Teacher):
    def predict_batch(self, audios):
        time.sleep(0.5)
        return super().predict_batch(audios)

t = Teacher.load(sys.argv[3])
slow = Slow(t.config, t.decoder, identity=t.identity)
pseudo_label(sys.argv[1], sys.argv[2], teacher=slow)
"""


def _arrays(root: Path) -> list[tuple]:
    return [(u.id, u.audio.tobytes(), u.labels.tobytes(), None if u.truth is None else u.truth.tobytes())
            for u in Dataset(root, verify=True)]  # fmt: skip


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, source, teacher_path):
    teacher = Teacher.load(teacher_path)
    ref = pseudo_label(source, tmp_path / "ref", teacher=teacher)
    assert ref is not None and ref["totals"]["utterances"] == 15

    out = tmp_path / "killed"
    script = tmp_path / "slow_label.py"
    script.write_text(textwrap.dedent(SLOW_LABEL))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, str(script), str(source), str(out), str(teacher_path)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((out / "shards").glob("shard-*.npz")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list((out / "shards").glob("shard-*.npz"))
    assert 1 <= len(finished) < 5, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    manifest = pseudo_label(source, out, teacher=teacher)
    assert manifest is not None
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items()), "finished shards are not redone"
    assert _arrays(out) == _arrays(tmp_path / "ref")
    assert Dataset(out).manifest["has_truth"] and Dataset(out).manifest["has_labels"]


def test_shards_then_merge(tmp_path, source, teacher_path):
    teacher = Teacher.load(teacher_path)
    out = tmp_path / "sharded"
    assert pseudo_label(source, out, teacher=teacher, config=LabelConfig(shard=(1, 2))) is None
    with pytest.raises(DatasetError, match="not labeled yet"):
        pseudo_label(source, out, teacher=teacher, config=LabelConfig(merge_only=True))
    assert pseudo_label(source, out, teacher=teacher, config=LabelConfig(shard=(0, 2))) is not None
    assert len(list((out / "shards").glob("*.npz"))) == 5
    pseudo_label(source, tmp_path / "whole", teacher=teacher)
    assert _arrays(out) == _arrays(tmp_path / "whole")


def test_audio_folder_source(tmp_path, teacher_path):
    teacher = Teacher.load(teacher_path)
    rng = np.random.default_rng(0)
    for i in range(3):
        save_wav(tmp_path / "wavs" / f"clip{i}.wav", 0.1 * rng.standard_normal(8000 + 4000 * i))
    manifest = pseudo_label(tmp_path / "wavs", tmp_path / "out", teacher=teacher,
                            config=LabelConfig(files_per_unit=2))  # fmt: skip
    assert manifest["totals"]["utterances"] == 3 and len(manifest["shards"]) == 2
    utts = Dataset(tmp_path / "out").utterances()
    assert [u.id for u in utts] == ["clip0.wav", "clip1.wav", "clip2.wav"]
    assert all(u.labels.shape == (u.n_frames(30), 52) and u.truth is None for u in utts)
