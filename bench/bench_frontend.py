"""Raw-waveform frontend (the paper's) vs a fixed log-mel frontend, same preset widths, same training budget.

The issue asks for the paper's raw-waveform students and welcomes "a log-mel front end computed by fixed
convolutions" to compare. For each preset in ``--presets`` this trains two students with the default
``DistillConfig`` (pseudo-labels + ground truth, ``--steps`` steps each, same seed):

* ``waveform``: the preset as it is (kernel == stride convs on the samples);
* ``logmel``: the preset with ``frontend="logmel"`` (``compress distill --logmel``): a fixed Hamming-windowed DFT
  conv of 16 ms at hop 64, power, a 64-band mel conv and a centred log, then one 1x1 conv of the preset's last
  frontend width. Same lookahead (the filterbank reads only past audio of each 4 ms cell).

and reports test-split quality (MSE / mean-predictor MSE, x the teacher's test MSE when ``--teacher`` names a
teacher folder, lip closure on p/b/m, jitter ratio), trained and fixed parameters, and the bytes and parity of the
real fp32 and int8 TFLite binaries (``compress.export``; a log-mel student's filterbank stays float in int8).

    python bench/bench_frontend.py --corpus runs/default/corpus --pseudo runs/default/pseudo \
        --teacher runs/default/teacher --presets tiny,causal --steps 4000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from compress.card import card_path
from compress.cmd_compress import split_windows
from compress.export import ExportConfig, export_each
from students.data import evaluate_student, load_split
from students.distill import DistillConfig, load_pseudo, train_student
from students.model import preset


def logmel_overrides(name: str) -> dict:
    """What ``compress distill --logmel NAME`` changes in a preset."""
    return {"frontend": "logmel", "strides": (1,), "frontend_channels": preset(name).frontend_channels[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="runs/default/corpus")
    ap.add_argument("--pseudo", default="runs/default/pseudo")
    ap.add_argument(
        "--teacher", help="teacher folder: its metrics.json test MSE scales the 'x teacher' column"
    )
    ap.add_argument("--presets", default="tiny,causal")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    labeled, test = load_split(corpus / "labeled"), load_split(corpus / "test", field="truth")
    pseudo = load_pseudo(Path(args.pseudo))
    teacher_mse = None
    if args.teacher:
        teacher_mse = json.loads((Path(args.teacher) / "metrics.json").read_text())["metrics"]["test"]["mse"]
    header = (
        f"{'preset':<9}{'frontend':<10}{'mse/mean':>9}{'x teacher':>10}{'lip':>6}{'jitter':>7}{'trained':>9}"
        f"{'fixed':>8}{'fp32 tflite B':>14}{'int8 tflite B':>14}{'int8 max|Δ|':>12}{'train s':>8}"
    )
    rows = []
    for name in (p.strip() for p in args.presets.split(",") if p.strip()):
        for frontend, overrides in (("waveform", {}), ("logmel", logmel_overrides(name))):
            t0 = time.time()
            model, _ = train_student(
                preset(name, **overrides),
                pseudo,
                labeled=labeled,
                settings=DistillConfig(),
                steps=args.steps,
                progress=False,
            )
            seconds = time.time() - t0
            model.eval()
            m = evaluate_student(model, test, mean_vector=pseudo.target_mean())
            trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
            fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            calib, _ = split_windows(labeled, model, part="calib", count=256, seed=0)
            held, _ = split_windows(labeled, model, part="heldout", count=64, seed=1)
            sizes: dict[str, str] = {}
            with tempfile.TemporaryDirectory() as out:
                config = ExportConfig(formats=("tflite",), dtypes=("fp32", "int8"))
                paths, refused = export_each(model, calib, held, out, name=name, config=config)
                for path in paths:
                    card = json.loads(card_path(path).read_text())
                    sizes[card["dtype"]] = f"{card['file_bytes']:,}"
                    if card["dtype"] == "int8":
                        sizes["parity"] = f"{card['parity']['max_abs_diff']:.4f} ok"
                for (_, dtype), exc in refused.items():
                    sizes[dtype] = "refused"
                    if dtype == "int8" and exc.max_abs_diff is not None:
                        sizes["parity"] = f"{exc.max_abs_diff:.4f} NO"
            ratio = f"{m['mse'] / teacher_mse:.2f}" if teacher_mse else "-"
            rows.append(
                f"{name:<9}{frontend:<10}{m['mse_ratio_to_mean']:>9.3f}{ratio:>10}{m['lip_closure']:>6.2f}"
                f"{m['jitter_ratio']:>7.2f}{trained:>9,}{fixed:>8,}{sizes.get('fp32', '?'):>14}"
                f"{sizes.get('int8', '?'):>14}{sizes.get('parity', '-'):>12}{seconds:>8.0f}"
            )
            print(rows[-1], flush=True)
    print(
        f"\n{args.steps} steps each, {torch.get_num_threads()} threads; int8 parity gate is max |Δ| <= 0.02"
    )
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
