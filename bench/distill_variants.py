"""Distil one preset several times with config changes, each from a finished run's own distill config, and print
one line per variant (compress distill's own summary: params, lookahead, test MSE / mean, lip closure).

    python bench/distill_variants.py --run runs/ref13 --preset tiny-mel --out /tmp/variants \\
        control='{}' seed1='{"seed": 1}' ema='{"ema_decay": 0.999}' \\
        wide='{"overrides": {"tiny-mel": {"context_channels": [128, 128]}}}'

Each variant starts from ``RUN/students/PRESET/card.json``'s ``distill_config`` (or, when RUN's distillation has
not reached PRESET yet, the distill config ``compress run`` builds from ``RUN/run_config.json``: only the
stage-1 student has to be finished) with only PRESET trained, updated with the variant's JSON (any
``DistillConfig`` field), and trains in ``OUT/NAME`` on RUN's pseudo-labels and labeled split, evaluated on RUN's test split; RUN's stage-1 ``small`` is copied in (stage 2 warm-starts from it
where shapes allow). A finished variant is skipped on a rerun (compress distill resumes). Set OMP_NUM_THREADS to
pin the threads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="finished `compress run` work folder")
    ap.add_argument("--preset", default="tiny-mel")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("variants", nargs="+", help="NAME=JSON of DistillConfig changes")
    args = ap.parse_args()
    base = _base_config(args.run, args.preset)
    stage1 = base["stage1"]
    for spec in args.variants:
        name, _, change = spec.partition("=")
        cfg = {**base, "presets": [args.preset], **json.loads(change or "{}")}
        out = args.out / name
        (out / stage1).mkdir(parents=True, exist_ok=True)
        for f in (args.run / "students" / stage1).iterdir():
            if f.is_file() and not (out / stage1 / f.name).exists():
                shutil.copy2(f, out / stage1 / f.name)
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
        cmd = [
            sys.executable, "-m", "compress.cli", "distill",
            "--pseudo", str(args.run / "pseudo"),
            "--labeled", str(args.run / "corpus" / "labeled"),
            "--test", str(args.run / "corpus" / "test"),
            "--out", str(out),
            "--config", str(out / "config.json"),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: compress distill failed: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        line = [ln for ln in done.stdout.splitlines() if ln.startswith(args.preset)]
        print(f"{name:<10} {change:<60} {line[-1] if line else done.stdout.strip()}", flush=True)
    return 0


def _base_config(run: Path, preset: str) -> dict:
    card = run / "students" / preset / "card.json"
    if card.is_file():
        return json.loads(card.read_text())["distill_config"]
    from compress.pipeline import RunConfig
    from students.distill import DistillConfig

    config = RunConfig.from_dict(json.loads((run / "run_config.json").read_text()))
    if config.quick:
        sys.exit(f"{run}: a --quick run; pass a full one")
    return DistillConfig(presets=config.presets, seed=config.seed).to_dict()  # as compress run builds it


if __name__ == "__main__":
    sys.exit(main())
