"""Benchmark of student training: what the pseudo-labels and the feature loss buy, and what lookahead costs.

Ablation on ``tiny`` (same steps each, evaluated on the test split's ground truth):

* ``labeled-only``  -- ground truth of the labeled split only, with gain/noise augmentation;
* ``pseudo-only``   -- teacher pseudo-labels only (reconstruction + velocity loss);
* ``pseudo + GT``   -- pseudo-labels + the labeled split's ground truth (the default ``DistillConfig``, with its
  extra loss weight on the lip-closure channel), and the same with ``closure_weight`` 0;
* ``hybrid fw=W``   -- pseudo-labels + ground truth + feature loss of weight W against the stage-1 ``small``
  (the paper's stage 2), for the weights in ``FEATURE_WEIGHTS``.

Closure sweep (``--parts closure``): one preset (``--preset``, default ``tiny-mel``) at the default settings with
the closure hinge (``DistillConfig.closure_hinge_weight``) at each of ``--hinge-weights``: the lip-closure vs MSE
trade-off the hinge buys.

Lookahead sweep: ``tiny`` widths, 256 ms past, future 0 / 16 / 32 / 64 / 128 / 256 ms, pseudo-labels
(or the labeled split's ground truth if no pseudo-labels exist yet).

Prints one table of measured numbers (and writes them as JSON with ``--json``). Example::

    python bench/bench_distill.py --steps 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from students.data import Split, evaluate_student, load_split
from students.distill import DistillConfig, load_pseudo, train_student
from students.model import describe, load_student, preset

SWEEP_FUTURE_MS = (0, 16, 32, 64, 128, 256)
FEATURE_WEIGHTS = (0.001, 0.1)


def _row(name: str, model, summary: dict, test: Split, mean) -> dict:
    m = evaluate_student(model, test, mean_vector=mean)
    return {
        "variant": name,
        "lookahead_ms": describe(model)["lookahead_ms"],
        "steps": summary["steps"],
        "s_per_step": summary["seconds_per_step"],
        "mse": m["mse"],
        "mse_ratio_to_mean": m["mse_ratio_to_mean"],
        "lip_closure": m["lip_closure"],
        "jitter_ratio": m["jitter_ratio"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="runs/default/corpus", help="corpus with labeled/ and test/ splits")
    ap.add_argument("--pseudo", default="runs/default/pseudo", help="pseudo-label dataset (optional)")
    ap.add_argument(
        "--small", default="runs/default/students/small/student.pt", help="stage-1 student (hybrid)"
    )
    ap.add_argument("--steps", type=int, default=200, help="training steps per variant")
    ap.add_argument(
        "--parts", default="ablation,hybrid,sweep", help="comma-separated: ablation, hybrid, sweep"
    )
    ap.add_argument("--preset", default="tiny-mel", help="preset of the closure sweep")
    ap.add_argument("--hinge-weights", default="0,0.01,0.03,0.1", help="closure sweep: hinge weights")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    corpus = Path(args.corpus)
    labeled = load_split(corpus / "labeled")
    test = load_split(corpus / "test", field="truth")
    pseudo = load_pseudo(Path(args.pseudo)) if Path(args.pseudo).exists() else None
    settings = DistillConfig()  # the defaults of `compress distill`
    pseudo_only = DistillConfig(labeled_weight=0.0, feature_weight=0.0)
    rows: list[dict] = []
    parts = set(args.parts.split(","))
    t0 = time.perf_counter()

    def run(name: str, cfg, train: Split, **kw) -> None:
        model, summary = train_student(
            cfg, train, settings=kw.pop("settings", settings), steps=args.steps, **kw
        )
        rows.append(_row(name, model, summary, test, train.target_mean()))
        print(json.dumps(rows[-1]), file=sys.stderr)

    gt = settings.labeled_weight or 0.2  # ground-truth weight of the pseudo + GT and hybrid rows
    if "ablation" in parts:
        run("tiny labeled-only", preset("tiny"), labeled, augment=True)
        if pseudo is None:
            print("no pseudo-labels yet: skipping pseudo-only and hybrid", file=sys.stderr)
        else:
            run("tiny pseudo-only", preset("tiny"), pseudo, settings=pseudo_only)
            run(f"tiny pseudo + GT {gt:g}", preset("tiny"), pseudo, labeled=labeled,
                settings=DistillConfig(labeled_weight=gt, feature_weight=0.0))  # fmt: skip
            if settings.closure_weight > 0:
                run(f"tiny pseudo + GT {gt:g}, closure w=0", preset("tiny"), pseudo, labeled=labeled,
                    settings=DistillConfig(labeled_weight=gt, feature_weight=0.0, closure_weight=0.0))  # fmt: skip
    if "hybrid" in parts and pseudo is not None:
        if Path(args.small).is_file():
            small = load_student(args.small).requires_grad_(False)
            for weight in FEATURE_WEIGHTS:
                hybrid = DistillConfig(labeled_weight=gt, feature_weight=weight)
                run(f"tiny hybrid fw={weight:g} + GT", preset("tiny"), pseudo, teacher=small, labeled=labeled,
                    settings=hybrid)  # fmt: skip
        else:
            print(f"{args.small} missing: skipping hybrid (run `compress distill` first)", file=sys.stderr)
    if "closure" in parts:
        train = pseudo if pseudo is not None else labeled
        for weight in (float(w) for w in args.hinge_weights.split(",")):
            hinge = DistillConfig(**{**settings.to_dict(), "closure_hinge_weight": weight})
            run(
                f"{args.preset} hinge {weight:g}", preset(args.preset), train, labeled=labeled, settings=hinge
            )
    if "sweep" in parts:
        train = pseudo if pseudo is not None else labeled
        source = "pseudo" if pseudo is not None else "labeled"
        for future in SWEEP_FUTURE_MS:
            cfg = preset("tiny", future_ms=float(future))
            run(f"tiny future {future} ms ({source})", cfg, train, settings=pseudo_only)

    print(
        f"\n{'variant':<34}{'lookahead':>10}{'steps':>7}{'s/step':>8}{'mse':>10}{'mse/mean':>10}{'lip':>7}{'jitter':>8}"
    )
    for r in rows:
        print(
            f"{r['variant']:<34}{r['lookahead_ms']:>10g}{r['steps']:>7}{r['s_per_step']:>8.3f}{r['mse']:>10.5f}"
            f"{r['mse_ratio_to_mean']:>10.3f}{r['lip_closure']:>7.2f}{r['jitter_ratio']:>8.2f}"
        )
    print(f"total {time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} threads")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
