"""Benchmark weight rounding for quantized binaries: nearest vs GPTQ, same models, same windows, one run.

For each trained student of a run (and its pruned variant where ``compress run`` wrote one) exports the quantized
binaries twice -- weights rounded to nearest, and by GPTQ (``compress.quantize.round_weights``) -- and prints the
parity with the PyTorch float model on many held-out windows (max and mean |Δ|; the product gate is max |Δ| <= 0.02)
and, for ONNX a16w8, the test-split MSE of the binary itself. The parity gate is lifted (tolerance 1.0) so that a
binary the product would refuse still shows by how much it misses. Prints measured numbers only; exits 0.

    python bench/bench_rounding.py [--run runs/default] [--presets tiny,edge,causal,realtime]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compress.card import card_path
from compress.cmd_compress import evaluate_binary, split_windows
from compress.export import ExportConfig, export
from students.data import load_split
from students.model import load_student

GATE = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--presets", default="tiny,tiny-pruned,edge,causal,realtime")
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--dtypes", default="a16w8,int8")
    parser.add_argument("--parity-windows", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None, help="default: <run>/bench_rounding")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or args.run / "bench_rounding"
    calib_split = load_split(args.run / "corpus" / "labeled")
    test = load_split(args.run / "corpus" / "test", field="truth")
    print(f"held-out windows per binary: {args.parity_windows}; gate max|Δ| <= {GATE}")
    print(f"{'model':<14}{'binary':<14}{'rounding':<10}{'max|Δ|':>9}{'mean|Δ|':>10}{'test mse':>11}  gate")
    for preset in args.presets.split(","):
        base, _, pruned = preset.partition("-")
        ckpt = args.run / "students" / base / (f"student-{pruned}50.pt" if pruned else "student.pt")
        if not ckpt.is_file():
            print(f"{preset:<14}(no checkpoint at {ckpt}; skipped)")
            continue
        model = load_student(ckpt)
        calib, _ = split_windows(calib_split, model, part="calib", count=512, seed=0)
        held, _ = split_windows(calib_split, model, part="heldout", count=args.parity_windows, seed=1)
        for fmt in args.formats.split(","):
            for dtype in args.dtypes.split(","):
                for rounding in ("nearest", "gptq"):
                    config = ExportConfig(
                        formats=(fmt,), dtypes=(dtype,), int8_tolerance=1.0, weight_rounding=rounding
                    )
                    start = time.time()
                    scored = (fmt, dtype) == ("onnx", "a16w8")  # test-split quality: fast in ONNX Runtime
                    quality = (lambda p, m=model: evaluate_binary(p, m, test)) if scored else None
                    (path,) = export(
                        model,
                        calib,
                        held,
                        out,
                        name=f"{preset}-{rounding}",
                        config=config,
                        quality_fn=quality,
                    )
                    card = json.loads(card_path(path).read_text())
                    parity, mse = card["parity"], (card.get("quality") or {}).get("mse")
                    verdict = "pass" if parity["max_abs_diff"] <= GATE else "REFUSED"
                    print(
                        f"{preset:<14}{fmt + ' ' + dtype:<14}{rounding:<10}{parity['max_abs_diff']:>9.4f}"
                        f"{parity['mean_abs_diff']:>10.2e}{'' if mse is None else f'{mse:.6f}':>11}  {verdict}"
                        f"  ({time.time() - start:.0f} s)",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
