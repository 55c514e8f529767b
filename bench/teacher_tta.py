"""Test-time augmentation for the teacher: average its curves over speed-perturbed copies of the audio.

    python bench/teacher_tta.py --teacher DIR --test CORPUS/test [--feature-cache DIR]
        [--speeds 0.9,0.95,1,1.05,1.1] [--sets "1;0.95,1,1.05;0.9,1,1.1;0.9,0.95,1,1.05,1.1"]

The teacher is offline and non-causal, so it may look at the same utterance several times. Each copy is played
``s`` times faster (soxr resampling, pitch moves with it: the speed augmentation the teacher was trained with,
``teacher.augment.change_speed``); its curves are mapped back to the original timeline (the frame at time ``t`` of
the copy is the original's ``t * s``) and the copies' curves are averaged. For each set of speeds (``--sets``,
``;``-separated) one line: test MSE / predict-the-mean, lip closure, jitter ratio, then MSE / mean and lip closure by
language. Each speed's curves are computed once and shared by every set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from teacher_render import header, line  # a sibling in bench/, where this script runs from

from teacher.augment import change_speed
from teacher.constants import LIP_CLOSURE_CHANNEL, frame_times
from teacher.dataset import Dataset
from teacher.model import Teacher
from teacher.train import evaluate_grouped

WIDTH = 26  # first column: the set of speeds


def warp_back(curves: np.ndarray, speed: float, n_frames: int, fps: int, fps_to: int) -> np.ndarray:
    """Curves predicted at ``fps`` on a copy played ``speed`` times faster, sampled at the original's ``n_frames``
    anchors at ``fps_to`` (the dataset's rate; a 60 fps teacher's is not)."""
    src = frame_times(len(curves), fps) * speed
    dst = frame_times(n_frames, fps_to)
    return np.stack([np.interp(dst, src, curves[:, c]) for c in range(curves.shape[1])], axis=1).astype(
        np.float32
    )


def predict_at(
    teacher: Teacher, audios: list[np.ndarray], n_frames: list[int], speed: float, fps: int
) -> list[np.ndarray]:
    """The teacher's curves on each clip played ``speed`` times faster, at the clip's ``n_frames`` anchors at
    ``fps``."""
    out = []
    for s in range(0, len(audios), 32):
        group = audios[s : s + 32]
        if speed != 1.0:
            group = [change_speed(a, [], speed)[0] for a in group]
        out.extend(teacher.predict_batch(group))
    return [warp_back(p, speed, n, teacher.fps, fps) for p, n in zip(out, n_frames)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True, help="dataset folder with ground truth (CORPUS/test)")
    ap.add_argument("--feature-cache", type=Path, default=None)
    ap.add_argument("--speeds", default="0.9,0.95,1,1.05,1.1")
    ap.add_argument("--sets", default="1;0.95,1,1.05;0.9,1,1.1;0.9,0.95,1,1.05,1.1")
    ap.add_argument(
        "--closure-max",
        action="store_true",
        help="also print each set with the lip-closure channel combined by max over the copies instead of mean",
    )
    args = ap.parse_args()
    speeds = [float(x) for x in args.speeds.split(",")]
    sets = [[float(x) for x in s.split(",")] for s in args.sets.split(";")]
    for s in sets:
        if not set(s) <= set(speeds):
            raise SystemExit(f"--sets: {s} uses speeds outside --speeds {speeds}")
    teacher = Teacher.load(args.teacher)
    teacher.features.cache_dir = args.feature_cache
    ds = Dataset(args.test)
    utts = [u for u in ds if u.truth is not None]
    if not utts:
        raise SystemExit(f"{args.test}: no ground truth to evaluate against")
    truths = [u.truth for u in utts]
    idx = [teacher.channel_names.index(c) for c in ds.channel_names]
    mean = teacher.label_mean[idx] if teacher.label_mean is not None else None
    audios = [u.audio for u in utts]
    n_frames = [len(t) for t in truths]
    preds: dict[float, list[np.ndarray]] = {}
    for sp in speeds:
        t0 = time.perf_counter()
        preds[sp] = [p[:, idx] for p in predict_at(teacher, audios, n_frames, sp, ds.fps)]
        print(f"# speed {sp:g}: {len(utts)} utterances in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"# {teacher.identity[:12]} ({args.teacher}) on {args.test}")
    langs: list[str] = []
    for s in sets:
        avg = [np.mean([preds[sp][i] for sp in s], axis=0) for i in range(len(utts))]
        m = evaluate_grouped(avg, truths, utts, ds, mean_vector=mean, by=("language",))
        if not langs:
            langs = sorted(m["by_language"])
            print(header("speeds", langs, WIDTH))
        print(line(",".join(f"{x:g}" for x in s), m, langs, WIDTH), flush=True)
        if args.closure_max and len(s) > 1:
            c = ds.channel_names.index(LIP_CLOSURE_CHANNEL)
            for i, a in enumerate(avg):
                a[:, c] = np.max([preds[sp][i][:, c] for sp in s], axis=0)
            m = evaluate_grouped(avg, truths, utts, ds, mean_vector=mean, by=("language",))
            print(line(",".join(f"{x:g}" for x in s) + " closure max", m, langs, WIDTH), flush=True)


if __name__ == "__main__":
    main()
