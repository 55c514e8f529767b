"""Teacher benchmark: labeling throughput, teacher size, and an ablation of the teacher's inputs and heads.

    python bench/bench_teacher.py [--corpus runs/default/corpus] [--teacher runs/default/teacher]
                                  [--seconds 120] [--epochs 30] [--skip-ablation]
                                  [--self-train runs/default/pseudo [--st-epochs 10 --st-variants 1]]

Prints measured numbers only (this machine, its thread count). The ablation trains the default teacher, then the
same decoder with one ingredient removed at a time (see ``ablation_configs``; features come from the shared
cache, so only the first run of each encoder setting pays for Whisper), and evaluates on the test split (the unlabeled split's held-back truth when there is no test split). ``--self-train PSEUDO``
compares, with one training config (``--st-epochs``, ``--st-variants`` augmented copies per clip), the teacher
trained on the labeled split alone against the same teacher trained on it plus the pseudo-labeled set PSEUDO
(self-training, ``train_teacher(pseudo_dir=...)``), both evaluated on the test split.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from teacher.dataset import Dataset, write_manifest, write_shard
from teacher.encoder import EncoderConfig
from teacher.label import pseudo_label
from teacher.model import Teacher, default_feature_cache
from teacher.train import TeacherTrainConfig, evaluate_teacher, train_teacher


def labeling_throughput(teacher: Teacher, source: Path, seconds: float) -> dict:
    """Seconds of audio labeled per wall second, on a copy of the first ``seconds`` of ``source``."""
    ds = Dataset(source)
    utts, total = [], 0.0
    for u in ds:
        utts.append(u)
        total += u.seconds
        if total >= seconds:
            break
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        entries = [
            write_shard(
                src / "shards" / f"shard-{i:05d}.npz",
                utts[i : i + 16],
                fps=ds.fps,
                n_channels=len(ds.channel_names),
            )
            for i in range(0, len(utts), 16)
        ]
        write_manifest(src, entries, name="bench", split=ds.split, fps=ds.fps, channel_names=ds.channel_names,
                       has_labels=False, has_truth=True, label_source="none")  # fmt: skip
        t0 = time.time()
        pseudo_label(src, Path(tmp) / "out", teacher=teacher)
        wall = time.time() - t0
    return {
        "audio_seconds": round(total, 1),
        "wall_seconds": round(wall, 1),
        "audio_s_per_s": round(total / wall, 1),
    }


METRICS = ("mse", "mse_ratio_to_mean", "lip_closure", "jitter_ratio")


def _line(m: dict) -> str:
    """The metric columns of one table row (header: mse, ratio, lip, jitter)."""
    return f"{m['mse']:>10.5f}{m['mse_ratio_to_mean']:>8.3f}{m['lip_closure']:>7.3f}{m['jitter_ratio']:>8.3f}"


def self_training(corpus: Path, pseudo: Path, epochs: int, variants: int) -> dict:
    """Test-split metrics of the default decoder trained on labeled vs labeled + ``pseudo`` (same config)."""
    config = replace(TeacherTrainConfig(), epochs=epochs, augment_variants=variants)
    out: dict = {"epochs": epochs, "augment_variants": variants, "pseudo": str(pseudo)}
    print(f"self-training ({epochs} epochs, {variants} augmented copies per clip), test split")
    print(f"{'training data':<26}{'mse':>10}{'ratio':>8}{'lip':>7}{'jitter':>8}{'train_s':>9}")
    for name, extra in (("labeled", None), ("labeled + pseudo-labels", pseudo)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            card = train_teacher(
                corpus / "labeled", tmp, config=config, eval_dir=corpus / "test", pseudo_dir=extra
            )
            train_s = time.time() - t0
        m = card["metrics"]["test"]
        row = {k: m[k] for k in METRICS}
        out[name] = {**row, "train_seconds": round(train_s, 1), "best_epoch": card["holdout"]["best_epoch"]}
        print(f"{name:<26}{_line(m)}{train_s:>9.0f}")
    return out


def ablation_configs(epochs: int, threads: int = 2) -> list[tuple[str, TeacherTrainConfig]]:
    """The default teacher, then one ingredient removed at a time: the encoder (log-mel only), the log-mel
    (encoder only), the intermediate encoder layers (CTranslate2's last layer only) and the viseme head."""
    base = replace(TeacherTrainConfig(), epochs=epochs, threads=threads)
    layers = ",".join(map(str, base.encoder.layers)) or "last"
    rows = [
        (f"both (layers {layers}) [default]", base),
        ("whisper only", replace(base, model=replace(base.model, features="whisper"))),
        ("logmel only", replace(base, model=replace(base.model, features="logmel"))),
    ]
    if base.encoder.layers:
        rows.append(("both, last layer only (CT2 int8)", replace(base, encoder=EncoderConfig())))
    if base.viseme_weight > 0:
        rows.append(("both, no viseme head", replace(base, viseme_weight=0.0)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="runs/default/corpus")
    ap.add_argument("--teacher", default="runs/default/teacher")
    ap.add_argument("--seconds", type=float, default=120.0, help="audio used for the throughput measurement")
    ap.add_argument(
        "--epochs", type=int, default=TeacherTrainConfig().epochs, help="ablation training epochs"
    )
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (training and labeling)")
    ap.add_argument("--self-train", help="pseudo-labeled dataset: compare labeled-only vs labeled + it")
    ap.add_argument("--st-epochs", type=int, default=10, help="self-training comparison: epochs")
    ap.add_argument("--st-variants", type=int, default=1, help="self-training comparison: augmented copies")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads()}

    teacher = Teacher.load(args.teacher)
    results["size"] = teacher.size()
    source = (
        corpus / "unlabeled" if (corpus / "unlabeled" / "manifest.json").is_file() else corpus / "labeled"
    )
    results["labeling"] = labeling_throughput(teacher, source, args.seconds)
    print(json.dumps({k: results[k] for k in ("size", "labeling")}, indent=2))

    if not args.skip_ablation:
        eval_dir = corpus / "test" if (corpus / "test" / "manifest.json").is_file() else corpus / "unlabeled"
        results["ablation"] = {"eval_split": eval_dir.name}
        print(f"{'decoder input':<34}{'mse':>10}{'ratio':>8}{'lip':>7}{'jitter':>8}{'train_s':>9}")
        for name, config in ablation_configs(args.epochs, args.threads):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                train_teacher(corpus / "labeled", tmp, config=config)
                train_s = time.time() - t0
                trained = Teacher.load(Path(tmp) / "teacher.pt")
                trained.features.cache_dir = default_feature_cache()  # evaluation clips are encoded once
                m = evaluate_teacher(trained, eval_dir)
            row = {k: m[k] for k in METRICS}
            results["ablation"][name] = {**row, "train_seconds": round(train_s, 1)}
            print(f"{name:<34}{_line(m)}{train_s:>9.0f}")
    if args.self_train:
        results["self_training"] = self_training(
            corpus, Path(args.self_train), args.st_epochs, args.st_variants
        )
    print(json.dumps(results, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)))


if __name__ == "__main__":
    main()
