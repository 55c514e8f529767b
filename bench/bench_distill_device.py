"""Benchmark of student training on the CPU vs a CUDA GPU (``compress distill --device``).

Each preset trains the same number of steps from the same seed on every device asked for: the same batches (they
are cut on the CPU with the same random draws) and the same init, so the rows differ only in where the forward and
backward passes ran. Prints seconds per step, the speed-up over the first device's row (list cpu first) measured
in this run, the last training losses and, with ``--test``, the test split's quality of each trained student. CUDA
and CPU runs start identical, but float rounding differences grow over the steps, so their students agree within
training noise, not to the last digit (reports/bench/distill_device.txt: small, 200 steps, test MSE / mean 0.742 CPU vs 0.723 CUDA).

Example (a GPU machine; ``--train`` may be any labeled or pseudo-labeled dataset folder)::

    python bench/bench_distill_device.py --train runs/default/pseudo --test runs/default/corpus/test \\
        --presets small,tiny --steps 200 --devices cpu,cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from compress.cliargs import comma_list
from students.data import evaluate_student, load_split
from students.distill import DistillConfig, load_pseudo, resolve_device, train_student
from students.model import preset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="runs/default/pseudo", help="dataset folder with labels to train on")
    ap.add_argument("--test", help="test split with ground truth (optional): quality of each trained student")
    ap.add_argument("--presets", default="small,tiny", help="comma-separated presets")
    ap.add_argument("--steps", type=int, default=200, help="training steps per preset and device")
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated devices (cpu, cuda, cuda:N)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)

    devices = [resolve_device(d) for d in comma_list(args.devices)]
    train = load_pseudo(Path(args.train))
    test = load_split(args.test, field="truth") if args.test else None
    mean = train.target_mean()
    settings = DistillConfig(labeled_weight=0.0)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); train {args.train} ({train.seconds / 60:.1f} min of audio); "
        f"{args.steps} steps per preset, batch {settings.batch_size} x {settings.chunk_frames} frames"
    )
    rows = []
    for name in comma_list(args.presets):
        base = None
        for device in devices:
            model, summary = train_student(
                preset(name), train, settings=settings, steps=args.steps, progress=False, device=device
            )
            row = {
                "preset": name,
                "device": summary["device"],
                "steps": summary["steps"],
                "s_per_step": summary["seconds_per_step"],
                "recon": summary["last_losses"]["recon"],
                "velocity": summary["last_losses"]["velocity"],
            }
            base = base or row["s_per_step"]
            row["speedup_vs_first"] = round(base / row["s_per_step"], 2)
            if test is not None:
                m = evaluate_student(model, test, mean_vector=mean)
                row["test_mse_ratio_to_mean"] = m["mse_ratio_to_mean"]
                row["test_lip_closure"] = m["lip_closure"]
            rows.append(row)
            quality = (
                f"  test mse/mean {row['test_mse_ratio_to_mean']:.4f}  lip {row['test_lip_closure']:.3f}"
                if test is not None
                else ""
            )
            print(
                f"{name:<9} {row['device']:<32} {row['s_per_step']:>8.4f} s/step  x{row['speedup_vs_first']:<6g} "
                f"last recon {row['recon']:.5f} velocity {row['velocity']:.5f}{quality}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
