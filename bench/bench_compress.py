"""Benchmark the compression stage: fp32 vs pruned vs quantized (int8, a16w8) vs pruned+quantized, ONNX and TFLite.

For each student (default: tiny and small from runs/default/students) prints file bytes, params, parity with the
PyTorch model and test-split quality of the binary itself (teacher.metrics.evaluate over whole test utterances,
window by window); a binary the parity gate refuses is listed with its measured miss. Then checks the targets:
pruned+int8 TFLite tiny (and any tiny-family preset, e.g. tiny-mel) <= 0.25 MB with MSE within 10 % of fp32
tiny; int8 small <= 1/4 of fp32 bytes with MSE within 3 % -- for int8 (full integer, the issue's wording) and for a16w8 (int8 weights, int16 activations).
The pruned model is fine-tuned against the unpruned one on windows of the run's pseudo-labeled audio, as
``compress run`` does. Prints measured numbers only; exits 0 either way.

    python bench/bench_compress.py [--presets tiny,tiny-mel,small] [--prune tiny,tiny-mel] [--run runs/default]
        [--ratio 0.3]

A pruned student that `compress run` made from the same parent with the same settings (ratio, fine-tune steps and
windows) is reused rather than pruned again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compress.card import card_path
from compress.cmd_compress import evaluate_binary, split_windows
from compress.export import DTYPES, FORMATS, ExportConfig, export_each
from compress.pipeline import PRUNE_FINETUNE_STEPS, PRUNE_FINETUNE_WINDOWS, pruned_path
from compress.prune import PruneConfig, prune
from students.data import load_split
from students.model import count_params, load_student, save_student, saved_with
from teacher.fsutil import sha256_file

PRODUCT_INT8_GATE = 0.02  # the parity gate shipped binaries must pass (compress.export default)


def int8_floor_bytes(model: torch.nn.Module) -> int:
    """Bytes no per-channel int8 binary of ``model`` can go under: one byte per conv/linear weight, four per bias
    (int32 or float) and four per output channel (its float weight scale), before any graph or metadata."""
    total = 0
    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv1d, torch.nn.Linear)):
            total += layer.weight.numel() + 4 * layer.weight.shape[0]
            if layer.bias is not None:
                total += 4 * layer.bias.numel()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument(
        "--ratio", type=float, default=0.3, help="channels pruned (compress run's default 0.3)"
    )
    parser.add_argument("--prune", default="tiny,tiny-mel", help="presets that also get a pruned variant")
    parser.add_argument("--finetune-steps", type=int, default=PRUNE_FINETUNE_STEPS)
    parser.add_argument("--finetune-windows", type=int, default=PRUNE_FINETUNE_WINDOWS)
    parser.add_argument("--out", type=Path, default=Path("runs/default/bench_compress"))
    parser.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.02,
        help="parity gate of quantized binaries, max |Δ| (0.02 is the product gate; raise it to measure the "
        "size/quality of binaries the gate refuses — the printed parity column then shows by how much they miss it)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as timed elsewhere)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calib_split = load_split(args.run / "corpus" / "labeled")
    audio_split = load_split(args.run / "pseudo", field=None)
    test = load_split(args.run / "corpus" / "test", field="truth")
    summary = {}
    for preset in args.presets.split(","):
        ckpt = args.run / "students" / preset / "student.pt"
        model = load_student(ckpt)
        calib, _ = split_windows(calib_split, model, part="calib", count=512)
        heldout, _ = split_windows(calib_split, model, part="heldout", count=64, seed=1)
        pruned = args.out / f"{preset}-pruned.pt"
        config = PruneConfig(
            ratio=args.ratio, round_to=4, finetune_steps=args.finetune_steps
        )  # as compress run
        made_from = {"parent_sha256": sha256_file(ckpt), "prune_config": config.to_dict()}
        from_run = pruned_path(ckpt, args.ratio)  # compress run's pruned child, made with these very settings
        same = (args.finetune_steps, args.finetune_windows) == (PRUNE_FINETUNE_STEPS, PRUNE_FINETUNE_WINDOWS)
        if same and saved_with(from_run, parent_sha256=made_from["parent_sha256"]):
            pruned = from_run
        elif preset in args.prune.split(",") and not saved_with(pruned, **made_from):
            windows, _ = split_windows(audio_split, model, part="calib", count=args.finetune_windows)
            save_student(pruned, prune(model, windows, config=config), **made_from)
        variants = {"base": (model, ckpt)}
        if preset in args.prune.split(","):
            print(f"{preset}: pruned student {pruned}")
            variants["pruned"] = (load_student(pruned), pruned)
        rows = {}
        for variant, (m, path) in variants.items():
            start = time.time()
            binaries, refused = export_each(
                m,
                calib,
                heldout,
                args.out,
                name=f"{preset}-{variant}",
                config=ExportConfig(int8_tolerance=args.int8_tolerance),
                parent_sha256=sha256_file(path),
                quality_fn=lambda p, m=m: evaluate_binary(p, m, test),
            )
            cards = {
                (c["format"], c["dtype"]): c for c in (json.loads(card_path(b).read_text()) for b in binaries)
            }
            for fmt in FORMATS:
                for dtype in DTYPES:
                    key = f"{variant}/{fmt}/{dtype}"
                    if (fmt, dtype) in refused:  # refused: the measured miss, no file, no quality
                        rows[key] = {"refused": True, "max_abs_diff": refused[(fmt, dtype)].max_abs_diff}
                        continue
                    card = cards[(fmt, dtype)]
                    rows[key] = {
                        "bytes": card["file_bytes"],
                        "params": count_params(m),
                        "max_abs_diff": card["parity"]["max_abs_diff"],
                        "mean_abs_diff": card["parity"]["mean_abs_diff"],
                        "mse": card["quality"]["mse"],
                        "lip_closure": card["quality"]["lip_closure"],
                    }
            print(f"{preset}/{variant}: {len(binaries)} binaries in {time.time() - start:.0f} s")
        print(
            f"\n{preset}: {'variant/format/dtype':<24}{'bytes':>11}{'params':>10}{'max|Δ|':>10}{'mean|Δ|':>10}{'mse':>10}{'lip':>7}"
        )
        for key, r in rows.items():
            if r.get("refused"):
                print(
                    f"{'':<{len(preset) + 2}}{key:<24}  REFUSED by the parity gate: max|Δ| {r['max_abs_diff']:.2g}"
                )
                continue
            print(
                f"{'':<{len(preset) + 2}}{key:<24}{r['bytes']:>11,}{r['params']:>10,}{r['max_abs_diff']:>10.2g}"
                f"{r['mean_abs_diff']:>10.2g}{r['mse']:>10.4g}{r['lip_closure']:>7.3f}"
            )
        summary[preset] = rows
        if "base/onnx/fp32" in rows:
            floor = int8_floor_bytes(model)
            rows["int8_floor_bytes"] = floor
            print(
                f"{'':<{len(preset) + 2}}floor of any per-channel int8 binary: {floor:,} B = "
                f"{floor / rows['base/onnx/fp32']['bytes']:.4f}x the fp32 ONNX, "
                f"{floor / rows['base/tflite/fp32']['bytes']:.4f}x the fp32 TFLite (weights, biases, scales; no graph)"
            )
    gate = args.int8_tolerance
    for dtype in ("int8", "a16w8"):
        # the issue's yardstick is fp32 tiny (without tiny in --presets: each tiny-family preset's own fp32)
        reference = summary.get("tiny")
        for preset, t in summary.items():
            if not preset.startswith("tiny") or f"pruned/tflite/{dtype}" not in t:
                continue
            q, f = t[f"pruned/tflite/{dtype}"], (reference or t)["base/tflite/fp32"]
            against = "tiny" if reference else preset
            if q.get("refused"):
                print(
                    f"target {preset} pruned+{dtype} TFLite: refused by the parity gate ({q['max_abs_diff']:.3g} > {gate}) -> NOT met"
                )
            else:
                rel = q["mse"] / f["mse"] - 1
                ok = q["bytes"] <= 250_000 and rel <= 0.10 and q["max_abs_diff"] <= PRODUCT_INT8_GATE
                print(
                    f"target {preset} pruned+{dtype} TFLite <= 0.25 MB, MSE within 10 % of fp32 {against}, parity <= "
                    f"{PRODUCT_INT8_GATE}: {q['bytes']:,} B, {rel:+.1%}, max|Δ| {q['max_abs_diff']:.3g} -> "
                    f"{'met' if ok else 'NOT met'}"
                )
        if "small" in summary:
            s = summary["small"]
            # the yardstick is always the unpruned fp32 small; a pruned small is an int8 small with fewer channels
            for variant, fmt in ((v, f) for v in ("base", "pruned") for f in FORMATS):
                if f"{variant}/{fmt}/{dtype}" not in s:
                    continue
                q, f = s[f"{variant}/{fmt}/{dtype}"], s[f"base/{fmt}/fp32"]
                label = "small" if variant == "base" else f"small pruned {args.ratio:.0%}+"
                if q.get("refused"):
                    print(
                        f"target {label} {dtype} {fmt}: refused by the parity gate ({q['max_abs_diff']:.3g} > {gate}) -> NOT met"
                    )
                    continue
                ratio, rel = q["bytes"] / f["bytes"], q["mse"] / f["mse"] - 1
                ok = ratio <= 0.25 and rel <= 0.03 and q["max_abs_diff"] <= PRODUCT_INT8_GATE
                print(
                    f"target {label} {dtype} {fmt} <= 1/4 fp32 small's bytes, MSE within 3 % of fp32 small: "
                    f"{ratio:.3f}x, {rel:+.1%}, max|Δ| {q['max_abs_diff']:.3g} -> {'met' if ok else 'NOT met'}"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
