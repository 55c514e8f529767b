"""Data-parallel distillation: two CPU processes on gloo train one model with identical weights; rank 0 writes."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from students.data import load_split
from students.distill import DistillConfig, train_student
from students.model import Student, preset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, pseudo: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        settings = DistillConfig(batch_size=2, chunk_frames=10, checkpoint_every=5)
        model, summary = train_student(
            preset("edge"),
            load_split(pseudo),
            settings=settings,
            steps=8,
            checkpoint=os.path.join(out, "checkpoint.pt"),
            progress=False,
        )
        torch.save(
            {"state": model.state_dict(), "losses": summary["last_losses"]},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_weights(synthetic, tmp_path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(synthetic["pseudo"]), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8
    assert r0["losses"] != r1["losses"], "both ranks drew the same chunks"
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
        assert torch.equal(value, ckpt["trainee"][f"student.{key}"]), key
    torch.manual_seed(DistillConfig().seed)
    fresh = Student(preset("edge")).state_dict()
    assert not torch.equal(fresh["frontend.0.weight"], r0["state"]["frontend.0.weight"]), (
        "no training happened"
    )
