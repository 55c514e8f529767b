"""Does a student that reads mu-law companded audio survive full-int8 quantization, and what does it cost?

Full-int8 binaries of our raw-waveform students are refused by the 0.02 parity gate: the int8 audio input and the
first convolutions' int8 activations (both linear in loudness) lose the quiet parts. A student with
``input_encoding="mulaw"`` reads G.711-style companded audio, sign(x) ln(1 + mu |x|) / ln(1 + mu); its binaries
leave the companding to the host (the card's ``input.encoding``), so their int8 input levels are spread over
loudness. This trains one preset on linear audio and on companded audio for each ``--mu`` at equal steps
(pseudo-labels + ground truth, the default ``DistillConfig``) and reports for each:

* test-split quality of the float model (MSE / mean-predictor MSE, lip closure);
* the PyTorch-side PT2E full-int8 error (``compress.quantize.quantize_pt2e`` on the binary form, per-channel int8
  weights, int8 activations, calibrated on labeled windows, max / mean |Δ| on held-out windows) and the error of
  quantizing the input alone (``input_sensitivity``), with the three most sensitive layers;
* the real full-int8 ONNX and TFLite binaries (``compress.export``, GPTQ weight rounding, onnxruntime / LiteRT):
  their measured parity max |Δ| ("ok", or "NO" when the gate refused the binary), and the test-split MSE / mean of the int8 TFLite
  binary where it passed.

    python bench/bench_mulaw.py --corpus runs/default/corpus --pseudo runs/default/pseudo --preset edge --steps 4000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from compress.card import card_path
from compress.cmd_compress import evaluate_binary, split_windows
from compress.export import ExportConfig, export_each
from compress.quantize import input_sensitivity, quantize_pt2e, sensitivity
from students.data import evaluate_student, load_split
from students.distill import DistillConfig, load_pseudo, train_student
from students.model import as_binary, preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="runs/default/corpus")
    ap.add_argument("--pseudo", default="runs/default/pseudo")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mu", default="255", help="comma-separated mu values to compare with linear input")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    labeled, test = load_split(corpus / "labeled"), load_split(corpus / "test", field="truth")
    pseudo = load_pseudo(Path(args.pseudo))
    header = (
        f"{'input':<8}{'mse/mean':>9}{'lip':>6}{'sim max|Δ|':>11}{'mean|Δ|':>9}{'input':>8}"
        f"{'onnx int8':>11}{'tflite int8':>12}{'its mse':>8}  worst layers (sim)"
    )
    rows = []
    variants = [("linear", {})] + [
        (f"mu={float(mu):g}", {"input_encoding": "mulaw", "input_mu": float(mu)}) for mu in args.mu.split(",")
    ]
    for name, overrides in variants:
        t0 = time.time()
        model, _ = train_student(
            preset(args.preset, **overrides),
            pseudo,
            labeled=labeled,
            settings=DistillConfig(),
            steps=args.steps,
            progress=False,
        )
        model.eval()
        m = evaluate_student(model, test, mean_vector=pseudo.target_mean())
        calib, _ = split_windows(labeled, model, part="calib", count=256, seed=0)
        held, _ = split_windows(labeled, model, part="heldout", count=64, seed=1)
        binary, (calib_in, held_in) = as_binary(model, calib, held)
        quantized, _ = quantize_pt2e(binary, calib_in)
        x = torch.from_numpy(held_in)
        with torch.no_grad():
            delta = (
                torch.cat([quantized(x[i : i + 1]) for i in range(len(x))]) - model(torch.from_numpy(held))
            ).abs()
        worst = sensitivity(model, calib, held)[:3]
        inp = input_sensitivity(model, calib, held)["max_abs_diff"]
        with tempfile.TemporaryDirectory() as out:
            paths, refused = export_each(
                model,
                calib,
                held,
                out,
                name=name.replace("=", ""),
                config=ExportConfig(dtypes=("int8",)),
                quality_fn=lambda p, model=model: evaluate_binary(p, model, test),
            )
            real, its_mse = {}, "-"
            for path in paths:
                card = json.loads(card_path(path).read_text())
                real[card["format"]] = f"{card['parity']['max_abs_diff']:.4f} ok"
                if card["format"] == "tflite":
                    its_mse = f"{card['quality']['mse_ratio_to_mean']:.3f}"
            for (fmt, _), exc in refused.items():
                real[fmt] = f"{exc.max_abs_diff:.4f} NO" if exc.max_abs_diff is not None else "NO"
        layers = ", ".join(f"{r['layer']} {r['max_abs_diff']:.3f}" for r in worst)
        rows.append(
            f"{name:<8}{m['mse_ratio_to_mean']:>9.3f}{m['lip_closure']:>6.3f}{float(delta.max()):>11.4f}"
            f"{float(delta.mean()):>9.5f}{inp:>8.4f}{real.get('onnx', '?'):>11}{real.get('tflite', '?'):>12}"
            f"{its_mse:>8}  {layers}"
        )
        print(rows[-1], f"({time.time() - t0:.0f} s)", flush=True)
    print(
        f"\n{args.preset}, {args.steps} steps each, {torch.get_num_threads()} threads; parity gate is max |Δ| <= 0.02"
    )
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
