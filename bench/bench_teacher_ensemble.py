"""Teacher ensembles: test-split quality of 1..K averaged decoders, each member alone, and labeling throughput.

    python bench/bench_teacher_ensemble.py [--corpus runs/default/corpus] [--out runs/bench/teacher-ensemble]
                                           [--members 5] [--seconds 120]

Trains (or resumes) the default teacher with ``members = K`` into ``--out`` (``compress teacher train --ensemble
K``: member 1 is the single default teacher, members 2..K differ only by seed), then evaluates on the test
split: every member alone, and the ensembles of the first k members for k = 1..K, with a per-language table for
the full ensemble. Also times pseudo-labeling ``--seconds`` of the unlabeled split with 1 and K members (the
Whisper encoder is shared, so each extra member costs one decoder pass). Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_teacher import labeling_throughput  # bench/ is on sys.path when this file runs as a script

from teacher.model import Teacher, TeacherEnsemble, default_feature_cache
from teacher.train import TeacherTrainConfig, evaluate_teacher, format_groups, train_teacher


def _row(m: dict) -> dict:
    return {k: float(f"{m[k]:.5g}") for k in ("mse", "mse_ratio_to_mean", "lip_closure", "jitter_ratio")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("runs/default/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench/teacher-ensemble"))
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=120.0, help="audio labeled for the throughput numbers")
    args = ap.parse_args()
    torch.set_num_threads(2)

    base = TeacherTrainConfig()
    config = replace(base, model=replace(base.model, members=args.members))
    t0 = time.time()
    card = train_teacher(args.corpus / "labeled", args.out, config=config)
    print(f"# trained/resumed {args.members} members in {time.time() - t0:.0f} s "
          f"(training {card['seconds']['training']} s)")  # fmt: skip
    teacher = Teacher.load(args.out)
    teacher.features.cache_dir = default_feature_cache()
    ensemble = teacher.decoder
    assert isinstance(ensemble, TeacherEnsemble)
    test = args.corpus / "test"
    results: dict = {"members": [], "ensembles": []}
    print(f"{'':<14}{'mse':>10}{'mse/mean':>10}{'lip':>7}{'jitter':>8}")
    for k, member in enumerate(ensemble.members):
        teacher.decoder = member
        m = _row(evaluate_teacher(teacher, test))
        results["members"].append(m)
        print(f"member {k + 1:<7}{m['mse']:>10.6f}{m['mse_ratio_to_mean']:>10.4f}{m['lip_closure']:>7.3f}"
              f"{m['jitter_ratio']:>8.3f}")  # fmt: skip
    ratios = [m["mse_ratio_to_mean"] for m in results["members"]]
    print(f"members: mean {np.mean(ratios):.4f}, min {min(ratios):.4f}, max {max(ratios):.4f}")
    full = None
    for k in range(1, args.members + 1):
        part = TeacherEnsemble(replace(ensemble.config, members=k))
        part.members = torch.nn.ModuleList(list(ensemble.members)[:k])
        teacher.decoder = part.eval()
        full = evaluate_teacher(teacher, test, by=("language",))
        m = _row(full)
        results["ensembles"].append(m)
        print(f"ensemble of {k:<2}{m['mse']:>10.6f}{m['mse_ratio_to_mean']:>10.4f}{m['lip_closure']:>7.3f}"
              f"{m['jitter_ratio']:>8.3f}")  # fmt: skip
    print(f"ensemble of {args.members}, by language:\n{format_groups(full)}")

    # labeling throughput: the encoder is shared, each extra member adds one decoder pass. Without the feature
    # cache (the evaluations above filled it), so the Whisper encoder runs as it does on new audio
    teacher.features.cache_dir = None
    throughput = {}
    for k in (1, args.members):
        part = TeacherEnsemble(replace(ensemble.config, members=k))
        part.members = torch.nn.ModuleList(list(ensemble.members)[:k])
        teacher.decoder = part.eval()
        throughput[k] = labeling_throughput(teacher, args.corpus / "unlabeled", args.seconds)
        print(f"labeling with {k} member(s): {throughput[k]['audio_s_per_s']} s of audio per s")
    results["throughput"] = throughput
    results["params"] = {"member": sum(p.numel() for p in ensemble.members[0].parameters()),
                         "ensemble": sum(p.numel() for p in ensemble.parameters())}  # fmt: skip
    print(
        f"decoder params: {results['params']['member']:,} per member, {results['params']['ensemble']:,} in all"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
