"""How long a binary's test-split evaluation takes in one process vs in worker processes (`evaluate_binary`).

    python bench/bench_eval_workers.py BINARY [BINARY ...] --students runs/default/students
                                       [--test runs/default/corpus/test] [--utterances 24] [--workers N]

Each binary's card names its preset and whether it was pruned; its parent checkpoint is found in --students
(`PRESET/student.pt`, or the pruned child `compress run` keeps beside it). Both runs use the first --utterances test
utterances with complete truth. Prints the seconds of each, their ratio, and whether the metrics are identical.
Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from compress.cmd_compress import eval_workers, evaluate_binary
from students.data import load_split
from students.model import load_student


def _parent(card: dict, students: Path) -> Path:
    folder = students / card["preset"]
    if card.get("pruned"):
        return sorted(folder.glob("student-pruned*.pt"))[0]
    return folder / "student.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--students", type=Path, default=Path("runs/default/students"))
    ap.add_argument("--test", type=Path, default=Path("runs/default/corpus/test"))
    ap.add_argument("--utterances", type=int, default=24)
    ap.add_argument("--workers", type=int, default=eval_workers())
    args = ap.parse_args()
    split = load_split(args.test, field="truth")
    keep = [i for i, t in enumerate(split.targets) if not np.isnan(t).any()][: args.utterances]
    split = replace(
        split,
        audio=[split.audio[i] for i in keep],
        targets=[split.targets[i] for i in keep],
        phonemes=[split.phonemes[i] for i in keep],
    )
    frames = sum(len(t) for t in split.targets)
    print(f"# {len(keep)} test utterances, {frames} frames (windows); workers {args.workers}")
    print(f"{'binary':<36}{'1 process s':>13}{'workers s':>11}{'speed-up':>10}  same metrics")
    for path in args.binaries:
        card = json.loads(path.with_name(path.name + ".card.json").read_text())
        model = load_student(_parent(card, args.students))
        t = time.perf_counter()
        one = evaluate_binary(path, model, split, workers=1)
        serial = time.perf_counter() - t
        t = time.perf_counter()
        many = evaluate_binary(path, model, split, workers=args.workers, parallel_after_s=0.0)
        parallel = time.perf_counter() - t
        same = json.dumps(one, sort_keys=True) == json.dumps(many, sort_keys=True)
        print(f"{path.name:<36}{serial:>13.1f}{parallel:>11.1f}{serial / parallel:>9.2f}x  {same}")


if __name__ == "__main__":
    main()
