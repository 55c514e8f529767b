"""`compress distill` and `compress students`: hybrid distillation of the student presets, and their sizes."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from compress.cliargs import comma_list
from students.distill import DistillConfig, distill
from students.model import PRESETS, Student, describe, preset
from teacher.constants import samples_to_ms
from teacher.errors import FacedistillError
from teacher.metrics import format_metrics

DEFAULT_PSEUDO = "runs/default/pseudo"
DEFAULT_LABELED = "runs/default/corpus/labeled"
DEFAULT_TEST = "runs/default/corpus/test"
DEFAULT_STUDENTS = "runs/default/students"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="train the student presets from teacher pseudo-labels (stage 1: small; stage 2: the rest)",
        description="Stage 1 trains `small` on the teacher's pseudo-labels (MSE + velocity loss). Stage 2 freezes "
        "it as a second teacher: every other preset learns the pseudo-labels plus small's intermediate CNN "
        "features (1x1 adapters, aligned in time). Each preset trains a fixed number of steps, checkpoints "
        "atomically and is skipped once done: rerun the same command to resume. Writes OUT/<preset>/student.pt "
        "and card.json (config, lookahead, params, parent hashes, test metrics). Runs unchanged under "
        "`torchrun --nproc_per_node=2 -m compress.cli distill ...` (gloo DDP, rank 0 writes).",
    )
    p.add_argument(
        "--pseudo", default=DEFAULT_PSEUDO, help=f"pseudo-label dataset folder (default {DEFAULT_PSEUDO})"
    )
    p.add_argument(
        "--labeled",
        default=DEFAULT_LABELED,
        help="labeled split for the optional ground-truth loss (used when labeled_weight > 0; "
        f"default {DEFAULT_LABELED})",
    )
    p.add_argument(
        "--labeled-weight", type=float, help="weight of the ground-truth loss (default 0.2; 0 = off)"
    )
    p.add_argument(
        "--feature-weight",
        type=float,
        help="weight of the feature loss against the stage-1 student (default 0 = off; see bench/bench_distill.py)",
    )
    p.add_argument(
        "--closure-hinge",
        type=float,
        help="weight of the closure hinge, which trades MSE for lip closure on p/b/m (default 0 = off; "
        "reports/bench/closure_hinge.txt: tiny-mel 0.01 -> lip closure 0.71 -> 0.78 at +3.6 %% MSE)",
    )
    p.add_argument(
        "--zero-out-init",
        action="store_true",
        help="start students trained from scratch with zero output weights, so their head units do not die in the "
        "first steps (reports/bench/tiny_mel_window.txt: tiny-mel 0.470x -> 0.457x the mean predictor)",
    )
    p.add_argument(
        "--ema",
        type=float,
        help="save the exponential moving average of the weights with this decay per step (default 0 = off; "
        "reports/bench/tiny_mel_variants.txt: 0.999 -> tiny-mel -1.5 %% test MSE over three seeds)",
    )
    p.add_argument(
        "--freq-warp",
        type=float,
        help="vocal tract length perturbation of log-mel students' training spectra: warp factors uniform in "
        "[1 - W, 1 + W] (default 0 = off; reports/bench/tiny_mel_vtlp.txt: 0.1 -> tiny-mel -0.8 %% test MSE "
        "over three seeds, within noise)",
    )
    p.add_argument(
        "--freq-masks",
        type=int,
        help="SpecAugment frequency masks per training chunk for log-mel students, each up to 8 adjacent mel "
        "bands (0 = off; see README section 7 for the measured effect)",
    )
    p.add_argument(
        "--freq-eq",
        type=float,
        metavar="DB",
        help="random smooth equalizer on log-mel students' training chunks, at most DB dB per band (default 0 = "
        "off; reports/bench/tiny_mel_regularizers.txt: 6 and 12 dB were neutral and worse for tiny-mel)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help="decoupled weight decay (AdamW) of the students (default 0 = plain Adam; "
        "reports/bench/tiny_mel_regularizers.txt: 0.1 -> tiny-mel -2.9 %% test MSE over three seeds)",
    )
    p.add_argument(
        "--test", default=DEFAULT_TEST, help=f"test split for the card metrics (default {DEFAULT_TEST})"
    )
    p.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--out", default=DEFAULT_STUDENTS, help=f"students folder (default {DEFAULT_STUDENTS})")
    p.add_argument("--presets", help=f"comma-separated presets (default all: {','.join(PRESETS)})")
    p.add_argument("--steps", type=int, help="training steps for every preset (default: per-preset table)")
    p.add_argument("--seed", type=int, help="seed of initialisation and chunk sampling (default 0)")
    p.add_argument(
        "--mulaw",
        help="comma-separated presets that read mu-law companded audio (their binaries then pass full-int8 "
        "parity; see bench/bench_mulaw.py)",
    )
    p.add_argument(
        "--logmel",
        help="comma-separated presets whose waveform frontend convs are replaced by the fixed log-mel filterbank "
        "(16 ms window, 64 bands) and one 1x1 conv of the preset's last frontend width (as tiny-mel is to tiny)",
    )
    p.add_argument(
        "--quick", action="store_true", help="5 %% of the steps: a smoke run in a couple of minutes"
    )
    p.add_argument(
        "--config",
        help="a DistillConfig as JSON text or a .json file (e.g. a card's distill_config); flags override it",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where training runs: cpu (default), cuda, cuda:N or auto (cuda when visible). Not part of the "
        "config: a run resumes on any device; each card records its device (bench/bench_distill_device.py)",
    )
    p.set_defaults(handler=cmd_distill)

    s = subparsers.add_parser(
        "students",
        help="list the student presets with parameters, fp32 bytes, window and exact lookahead",
        description="Every number is measured from the model code (layers, strides, dilations, head kernel, "
        "smoothing), not typed in. Lookahead = audio after the anchor that one output frame reads.",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(handler=cmd_students)


def _distill_config(args: argparse.Namespace) -> DistillConfig:
    data: dict = {}
    if args.config:
        text = Path(args.config).read_text() if args.config.endswith(".json") else args.config
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"{args.config}: --config is not valid JSON ({exc})"
            raise FacedistillError(msg) from None
    if args.presets:
        data["presets"] = comma_list(args.presets)
    if args.seed is not None:
        data["seed"] = args.seed
    if args.labeled_weight is not None:
        data["labeled_weight"] = args.labeled_weight
    if args.feature_weight is not None:
        data["feature_weight"] = args.feature_weight
    if args.closure_hinge is not None:
        data["closure_hinge_weight"] = args.closure_hinge
    if args.zero_out_init:
        data["zero_out_init"] = True
    if args.ema is not None:
        data["ema_decay"] = args.ema
    if args.freq_warp is not None:
        data["freq_warp"] = args.freq_warp
    if args.freq_masks is not None:
        data["freq_masks"] = args.freq_masks
    if args.freq_eq is not None:
        data["freq_eq_db"] = args.freq_eq
    if args.weight_decay is not None:
        data["weight_decay"] = args.weight_decay
    if args.mulaw:
        overrides = data.setdefault("overrides", {})
        for name in comma_list(args.mulaw):
            overrides.setdefault(name, {})["input_encoding"] = "mulaw"
    if args.logmel:
        overrides = data.setdefault("overrides", {})
        for name in comma_list(args.logmel):
            width = preset(name).frontend_channels[-1]  # refuses an unknown preset by name
            overrides.setdefault(name, {}).update(frontend="logmel", strides=[1], frontend_channels=[width])
    if args.steps is not None:
        data["steps"] = {}
        data["default_steps"] = args.steps
    config = DistillConfig.from_dict(data)
    return config.quick() if args.quick else config


def cmd_distill(args: argparse.Namespace) -> int:
    config = _distill_config(args)
    test = None if args.no_test or not Path(args.test, "manifest.json").is_file() else args.test
    labeled = args.labeled if config.labeled_weight > 0 else None
    if labeled is not None and not Path(labeled, "manifest.json").is_file():
        if args.labeled != DEFAULT_LABELED:
            msg = f"{labeled}: no labeled dataset here (manifest.json missing); pass --labeled-weight 0 to train without one"
            raise FacedistillError(msg)
        print(f"no labeled split at {labeled}: training without the ground-truth loss", file=sys.stderr)
        config, labeled = replace(config, labeled_weight=0.0), None
    cards = distill(
        args.pseudo, args.out, config=config, labeled_dir=labeled, test_dir=test, device=args.device
    )
    for name, card in cards.items():
        line = f"{name:<12} params {card['params']:>9,}  lookahead {card['lookahead_ms']:>5g} ms"
        metrics = card.get("test", {}).get("metrics")
        if metrics:
            line += f"  test mse/mean {metrics['mse_ratio_to_mean']:.3f}  lip closure {metrics['lip_closure']:.2f}"
        print(line)
        if metrics and name == config.stage1:
            print(format_metrics(metrics))
    return 0


def cmd_students(args: argparse.Namespace) -> int:
    rows = [describe(Student(cfg)) for cfg in PRESETS.values()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    w = max(len("preset"), *(len(r["name"]) for r in rows))
    print(
        f"{'preset':<{w}} {'params':>10} {'fp32 bytes':>12} {'window ms':>10} {'past ms':>8} {'lookahead ms':>13}"
        "  input   frontend"
    )
    for r in rows:
        window_ms = samples_to_ms(r["window_samples"])
        fixed = f" ({r['fixed_params']:,} fixed params)" if r["fixed_params"] else ""
        print(
            f"{r['name']:<{w}} {r['params']:>10,} {r['fp32_bytes']:>12,} {window_ms:>10g} {r['past_ms']:>8g} "
            f"{r['lookahead_ms']:>13g}  {r['input_encoding']:<7} {r['frontend']}{fixed}"
        )
    return 0
