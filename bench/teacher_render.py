"""A viseme-head teacher's curves blended with its posteriors rendered through the coarticulation model.

    python bench/teacher_render.py --teacher DIR --test CORPUS/test [--feature-cache DIR] [--blends 0,0.25,0.5,...]
        [--render-teacher DIR2]

The teacher must have the auxiliary viseme head (``compress teacher train --viseme-weight W``). For each blend
``b`` the very checkpoint is evaluated with ``TeacherConfig.render_blend = b`` through ``evaluate_teacher`` (the
path ``compress teacher eval`` and ``compress label`` take): ``b = 0`` is the regressed curves, ``b = 1`` the
rendered posteriors alone (teacher/render.py). Also printed: ``hard``, the render of the argmax viseme alone
(one-hot posteriors), and the head's frame accuracy against the split's phoneme timings (held-back truth: the viseme
of the phoneme under each frame's anchor, as the training targets are made). One line per variant: test MSE /
predict-the-mean, lip closure, jitter ratio, then MSE / mean and lip closure by language.

``--render-teacher DIR2`` takes the posteriors from another teacher (with the head) and the regressed curves from
``--teacher`` (with or without one): e.g. the best regression teacher with a default-width viseme teacher, evaluated
as the teacher ``bench/teacher_merge.py --render-from`` saves (its decoder plus the render decoder).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from teacher.dataset import Dataset
from teacher.model import Teacher, default_feature_cache
from teacher.render import render_posteriors
from teacher.train import evaluate_grouped, evaluate_teacher, frame_visemes


def header(first: str, langs: list[str], width: int = 10) -> str:
    """Column titles of ``line`` (also used by bench/teacher_tta.py)."""
    return f"{first:<{width}} {'mse/mean':>9} {'lip':>6} {'jitter':>7}   " + "  ".join(
        f"{g:>11}" for g in langs
    )


def line(name: str, m: dict, langs: list[str], width: int = 10) -> str:
    """One variant's metrics (``evaluate_grouped`` with ``by=("language",)``): MSE / mean, lip closure, jitter, then
    MSE / mean and lip closure per language."""
    by = [
        f"{m['by_language'][g]['mse_ratio_to_mean']:.3f}/{m['by_language'][g]['lip_closure']:.2f}"
        for g in langs
    ]
    head = f"{name:<{width}} {m['mse_ratio_to_mean']:>9.4f} {m['lip_closure']:>6.3f} {m['jitter_ratio']:>7.2f}   "
    return head + "  ".join(f"{b:>11}" for b in by)


def posteriors(teacher: Teacher, utts: list) -> list[np.ndarray]:
    """The viseme head's per-frame posteriors [F, V] for each utterance."""
    out = []
    for s in range(0, len(utts), 32):
        group = utts[s : s + 32]
        for f in teacher.features([u.audio for u in group]):
            with torch.no_grad():
                _, logits = teacher.decoder.forward_with_aux(torch.from_numpy(f)[None])
            out.append(logits[0].softmax(-1).numpy())
    return out


def teacher_arguments(ap: argparse.ArgumentParser) -> None:
    """--teacher, --test and --feature-cache, as this script and teacher_closure_post.py take them."""
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True, help="dataset folder with ground truth (CORPUS/test)")
    ap.add_argument(
        "--feature-cache", type=Path, default=None, help="feature cache (default $FACEDISTILL_CACHE/features)"
    )


def cache_features(teacher: Teacher, args: argparse.Namespace) -> Teacher:
    """Let ``teacher`` read and write the feature cache (``--feature-cache`` or the default one): a script that reads
    the same clip's features more than once encodes it once."""
    teacher.features.cache_dir = args.feature_cache or default_feature_cache()
    return teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher_arguments(ap)
    ap.add_argument("--blends", default="0,0.25,0.5,0.75,1")
    ap.add_argument(
        "--render-teacher",
        type=Path,
        help="take the viseme posteriors from this teacher and the regressed curves from --teacher (which then "
        "needs no viseme head)",
    )
    args = ap.parse_args()
    base = Teacher.load(args.teacher)
    source = Teacher.load(args.render_teacher) if args.render_teacher else base
    if not source.config.aux_classes:
        raise SystemExit(
            f"{args.render_teacher or args.teacher}: no viseme head (train it with --viseme-weight W)"
        )
    ds = Dataset(args.test)
    for t in (base, source):  # every blend reads the same features
        cache_features(t, args)
    utts = [u for u in ds if u.truth is not None]
    truths = [u.truth for u in utts]
    idx = [base.channel_names.index(c) for c in ds.channel_names]
    mean = base.label_mean[idx] if base.label_mean is not None else None
    posts = [p[: len(u.truth)] for p, u in zip(posteriors(source, utts), utts)]
    hits = sum(
        int((p.argmax(1) == frame_visemes(u.phonemes, len(p), ds.fps)).sum()) for p, u in zip(posts, utts)
    )
    hard = [render_posteriors(np.eye(p.shape[1])[p.argmax(1)], ds.fps)[:, idx] for p in posts]
    hard_m = evaluate_grouped(hard, truths, utts, ds, mean_vector=mean, by=("language",))
    langs = sorted(hard_m["by_language"])
    accuracy = hits / sum(len(p) for p in posts)
    print(
        f"{source.identity[:12]} ({args.render_teacher or args.teacher}): viseme head frame accuracy {accuracy:.3f}"
    )
    print(header("blend", langs))
    render = source.decoder if args.render_teacher else None
    for b in (float(x) for x in args.blends.split(",")):
        teacher = Teacher(  # the very checkpoint with render_blend b (and --render-teacher's decoder riding along)
            replace(base.config, render_blend=b), base.decoder, encoder_config=base.features.encoder_config,
            identity=base.identity, label_mean=base.label_mean, render_decoder=render,
        )  # fmt: skip
        cache_features(teacher, args)
        print(line(f"{b:g}", evaluate_teacher(teacher, args.test, by=("language",)), langs), flush=True)
    print(line("hard", hard_m, langs))


if __name__ == "__main__":
    main()
