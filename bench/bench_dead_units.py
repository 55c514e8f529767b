"""How many of a student's head units are alive: ReLUs that fire on some real window.

The head's first conv spans the whole window (a fully connected layer over it); its ReLU units are most of a
student's capacity. A unit whose pre-activation is negative on every window gives no output and gets no gradient:
it is dead, and stays dead unless the encoder below it moves. Random output-layer init kills many of them in the
first steps (``DistillConfig.zero_out_init``; ``reports/bench/tiny_mel_window.txt``). This prints, for each
checkpoint, the units of ``head.0`` that fire on at least one window of every ``--every``-th utterance of a split.

    python bench/bench_dead_units.py --split runs/default/corpus/test runs/default/students/*/student.pt
"""

from __future__ import annotations

import argparse

import torch

from students.data import load_split, utterance_windows
from students.model import load_student
from teacher.constants import frame_anchors


@torch.no_grad()
def alive_units(model, split, every: int = 10) -> tuple[int, int]:
    """(units of ``head.0`` positive on some window, all units) over every ``every``-th utterance of ``split``."""
    model = model.eval()
    if not len(model.head):
        return 0, 0
    alive = torch.zeros(model.head[0].out_channels, dtype=torch.bool)
    for i in range(0, len(split.audio), every):
        anchors = frame_anchors(len(split.targets[i]), split.fps)
        windows = torch.from_numpy(utterance_windows(split.audio[i], anchors, model))
        x, _ = model.encode(windows)
        alive |= (model.head[0](x) > 0).any(2).any(0)
    return int(alive.sum()), len(alive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="student checkpoints (.pt)")
    parser.add_argument("--split", default="runs/default/corpus/test", help="dataset folder of real audio")
    parser.add_argument("--every", type=int, default=10, help="use every N-th utterance (default 10)")
    args = parser.parse_args()
    split = load_split(args.split, field=None)
    print(f"# head.0 units alive on some window of every {args.every}th utterance of {args.split}")
    for path in args.checkpoints:
        alive, total = alive_units(load_student(path), split, args.every)
        print(f"{path}: {alive} of {total} alive")


if __name__ == "__main__":
    main()
