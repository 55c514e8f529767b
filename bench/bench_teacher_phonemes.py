"""Where a teacher's test error comes from: squared error summed over the frames of each phoneme, per language.

    python bench/bench_teacher_phonemes.py [--teacher runs/default/teacher] [--corpus runs/default/corpus]
                                           [--split test] [--languages fr,pl] [--top 12]

Each frame is charged to the phoneme whose interval holds its anchor. For every language it prints the phonemes
with the largest share of that language's summed squared error, their frames, error per frame and the three
channels that carry most of it, with the viseme the ground truth gives the phoneme there. Prints measured
numbers only.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from teacher.constants import frame_anchors
from teacher.dataset import Dataset
from teacher.model import Teacher, default_feature_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/default/teacher")
    ap.add_argument("--corpus", type=Path, default=Path("runs/default/corpus"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--languages", default="", help="comma-separated (default: every language of the split)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(2)
    teacher = Teacher.load(args.teacher)
    teacher.features.cache_dir = default_feature_cache()
    ds = Dataset(args.corpus / args.split)
    wanted = {x for x in args.languages.split(",") if x}
    utts = [u for u in ds if u.truth is not None and (not wanted or u.meta.get("language") in wanted)]
    names = ds.channel_names
    by_language: dict[str, dict[str, np.ndarray]] = defaultdict(
        lambda: defaultdict(lambda: np.zeros(len(names)))
    )
    frames: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    visemes: dict[tuple[str, str], str] = {}
    for s in range(0, len(utts), 32):
        batch = utts[s : s + 32]
        for u, pred in zip(batch, teacher.predict_batch([u.audio for u in batch])):
            n = min(len(pred), len(u.truth))
            sq = (pred[:n] - u.truth[:n]) ** 2
            anchors = frame_anchors(n, ds.fps)
            lang = str(u.meta.get("language", "?"))
            for ph in u.phonemes:
                lo, hi = np.searchsorted(anchors, [ph.start, ph.end])
                if hi > lo:
                    key = ph.phoneme.lstrip("',%=")
                    by_language[lang][key] += sq[lo:hi].sum(axis=0)
                    frames[lang][key] += int(hi - lo)
                    visemes[(lang, key)] = ph.viseme
    for lang in sorted(by_language):
        table = by_language[lang]
        total = sum(v.sum() for v in table.values())
        n_frames = sum(frames[lang].values())
        print(
            f"\n{lang}: {n_frames} frames, summed squared error {total:.2f} ({total / n_frames:.4f} per frame)"
        )
        print(
            f"  {'phoneme':<8}{'viseme':<8}{'frames':>7}{'share':>7}{'per frame':>10}  channels (per frame)"
        )
        for key, err in sorted(table.items(), key=lambda kv: -kv[1].sum())[: args.top]:
            f = frames[lang][key]
            top = np.argsort(-err)[:3]
            chans = ", ".join(f"{names[c]} {err[c] / f:.4f}" for c in top)
            print(
                f"  {key:<8}{visemes[(lang, key)]:<8}{f:>7}{err.sum() / total:>7.3f}{err.sum() / f:>10.4f}  {chans}"
            )


if __name__ == "__main__":
    main()
