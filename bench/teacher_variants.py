"""Train the teacher decoder with config changes, several seeds each, and print one line per (variant, seed).

    python bench/teacher_variants.py --corpus RUN/corpus --out OUT --seeds 0,1,2 \\
        base='{}' g192='{"model": {"gru_hidden": 192}}' av6='{"augment_variants": 6}'

Each variant is the default ``TeacherTrainConfig`` (what ``compress teacher train`` and ``compress run`` use)
updated with the JSON (``model`` keys go to ``TeacherConfig``, the rest to ``TeacherTrainConfig``; ``fps`` goes
through ``TeacherTrainConfig.at_fps``, which keeps crop, time masks and velocity weight in seconds), trained on
CORPUS/labeled (plus ``--pseudo``'s pseudo-labels: self-training) into OUT/NAME_sSEED and evaluated on
CORPUS/test. The seed moves the initialisation, the augmented copies and the batch order, so one run of a config
says little: compare means over seeds. A finished variant is reused on a rerun (training resumes). Threads:
``--threads`` (training is deterministic at a fixed thread count). ``--feature-cache`` shares Whisper features between variants (default $FACEDISTILL_CACHE/features).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from teacher.train import TeacherTrainConfig, train_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--feature-cache", default=None)
    ap.add_argument("--pseudo", type=Path, help="self-training: also train on this pseudo-labeled dataset")
    ap.add_argument("variants", nargs="+", help="NAME=JSON of config changes")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    base = TeacherTrainConfig()
    for spec in args.variants:
        name, _, change = spec.partition("=")
        change = json.loads(change or "{}")
        model = replace(base.model, **change.pop("model", {}))
        fps = change.pop("fps", 0)
        scores = []
        for seed in seeds:
            config = replace(
                base.at_fps(fps) if fps else base,
                model=model,
                threads=args.threads,
                cache_dir=args.feature_cache,
                seed=seed,
                **change,
            )
            card = train_teacher(
                args.corpus / "labeled",
                args.out / f"{name}_s{seed}",
                config=config,
                eval_dir=args.corpus / "test",
                pseudo_dir=args.pseudo,
            )
            m = card["metrics"]["test"]
            scores.append(m["mse_ratio_to_mean"])
            print(
                f"{name:<10} seed {seed}  decoder params {card['decoder_params']:>9,}  best epoch "
                f"{card['holdout']['best_epoch']:>2}  test mse/mean {m['mse_ratio_to_mean']:.4f}  lip closure "
                f"{m['lip_closure']:.3f}  jitter {m['jitter_ratio']:.2f}",
                flush=True,
            )
        if len(scores) > 1:
            print(f"{name:<10} mean over seeds {args.seeds}: {sum(scores) / len(scores):.4f}", flush=True)


if __name__ == "__main__":
    main()
