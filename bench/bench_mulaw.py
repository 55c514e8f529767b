"""Feasibility benchmark: does a student trained on mu-law companded audio survive full-int8 quantization?

Full-int8 binaries of our raw-waveform students are refused by the 0.02 parity gate: the int8 audio input and the
first convolutions' int8 activations (both linear in loudness) lose the quiet parts. Mu-law companding
(G.711's mu = 255, applied to the audio before the model, so that the int8 input *is* 8-bit mu-law audio)
spreads the 256 levels over loudness. This trains ``tiny`` twice at equal steps, on linear and on companded audio
(pseudo-labels + ground truth, the default ``DistillConfig``), and for each reports test-split quality and the
output error of PT2E full-int8 post-training quantization run in PyTorch (``compress.quantize.quantize_pt2e``,
per-channel int8 weights, int8 activations, calibrated on labeled windows, measured on held-out windows), plus
the per-layer sensitivity. It does not write binaries: companded input is not wired into the exporters yet.

    python bench/bench_mulaw.py --corpus runs/default/corpus --pseudo runs/default/pseudo --steps 1000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compress.cmd_compress import split_windows
from compress.quantize import input_sensitivity, quantize_pt2e, sensitivity
from students.data import Split, evaluate_student, load_split
from students.distill import DistillConfig, load_pseudo, train_student
from students.model import preset

MU = 255.0


def mulaw(audio: np.ndarray) -> np.ndarray:
    """G.711-style mu-law companding of audio in [-1, 1] (continuous; int8 quantization comes after)."""
    return (np.sign(audio) * np.log1p(MU * np.abs(audio)) / np.log1p(MU)).astype(np.float32)


def companded(split: Split) -> Split:
    return replace(split, audio=[mulaw(a) for a in split.audio])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="runs/default/corpus")
    ap.add_argument("--pseudo", default="runs/default/pseudo")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    labeled, test = load_split(corpus / "labeled"), load_split(corpus / "test", field="truth")
    pseudo = load_pseudo(Path(args.pseudo))
    header = f"{'input':<8}{'mse/mean':>10}{'lip':>7}{'int8 max|Δ|':>13}{'mean|Δ|':>10}{'input-only':>12}  worst layers"
    rows = []
    for name, f in (("linear", lambda s: s), ("mu-law", companded)):
        t0 = time.time()
        train, lab, te = f(pseudo), f(labeled), f(test)
        model, _ = train_student(
            preset("tiny"), train, labeled=lab, settings=DistillConfig(), steps=args.steps, progress=False
        )
        m = evaluate_student(model, te, mean_vector=train.target_mean())
        calib, _ = split_windows(lab, model, part="calib", count=256, seed=0)
        held, _ = split_windows(lab, model, part="heldout", count=64, seed=1)
        quantized, _ = quantize_pt2e(model, calib)
        x = torch.from_numpy(held)
        with torch.no_grad():
            delta = (torch.cat([quantized(x[i : i + 1]) for i in range(len(x))]) - model(x)).abs()
        worst = sensitivity(model, calib, held)[:3]
        inp = input_sensitivity(model, calib, held)["max_abs_diff"]
        layers = ", ".join(f"{r['layer']} {r['max_abs_diff']:.3f}" for r in worst)
        rows.append(
            f"{name:<8}{m['mse_ratio_to_mean']:>10.3f}{m['lip_closure']:>7.3f}{float(delta.max()):>13.4f}"
            f"{float(delta.mean()):>10.5f}{inp:>12.4f}  {layers}"
        )
        print(rows[-1], f"({time.time() - t0:.0f} s)", flush=True)
    print(
        f"\ntiny, {args.steps} steps each, {torch.get_num_threads()} threads; parity gate is max |Δ| <= 0.02"
    )
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
