"""Post-processing the teacher's lip-closure channel: what closure costs in MSE when forced after the fact.

    python bench/teacher_closure_post.py --teacher DIR --test CORPUS/test [--feature-cache DIR]

The teacher must carry the viseme head (its own, or a render decoder attached by ``bench/teacher_merge.py
--render-from``). One line per variant: test MSE / predict-the-mean, lip closure (ground truth's own score
beside it), jitter ratio, then MSE / mean and lip closure by language. Variants of ``mouthClose`` only (every
other channel is the teacher's):

* ``max hard render`` / ``max soft render``: the max of the curve and the closure channel of the head's posteriors
  rendered through the coarticulation model (``teacher/render.py``; hard = the argmax viseme one-hot);
* ``max gain G x P(PP)``: the max of the curve and G x the p/b/m viseme's closure target x its posterior;
* ``unsharp s S a A``: the curve plus A x (curve - its Gaussian blur of S frames), clipped to [0, 1] (peaks up,
  valleys down), on the closure channel or on every channel.

Also printed: the bilabial intervals the teacher misses (closure never over the threshold inside), with a histogram
of their peak closure and their durations.
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.ndimage
import torch

# a sibling in bench/, where this script runs from
from teacher_render import cache_features, teacher_arguments

from teacher.constants import ARKIT_52, LIP_CLOSURE_CHANNEL, LIP_CLOSURE_THRESHOLD, SAMPLE_RATE, frame_anchors
from teacher.dataset import Dataset
from teacher.features import resample_curves
from teacher.groundtruth import VISEMES
from teacher.metrics import is_bilabial
from teacher.model import Teacher
from teacher.render import _VISEME_TARGETS, render_posteriors
from teacher.train import evaluate_grouped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher_arguments(ap)
    args = ap.parse_args()
    teacher = cache_features(Teacher.load(args.teacher), args)  # curves and posteriors read the same features
    head = teacher.render_decoder or teacher.decoder
    if not head.config.aux_classes:
        raise SystemExit(
            f"{args.teacher}: no viseme head (train with --viseme-weight or attach a render decoder)"
        )
    ds = Dataset(args.test)
    utts = [u for u in ds if u.truth is not None]
    truths = [u.truth for u in utts]
    idx = [teacher.channel_names.index(c) for c in ds.channel_names]
    mean = teacher.label_mean[idx] if teacher.label_mean is not None else None
    curves, posts = [], []
    for s in range(0, len(utts), 32):
        group = utts[s : s + 32]
        audios = [u.audio for u in group]
        for f, c, u in zip(teacher.features(audios), teacher.predict_batch(audios), group):
            with torch.no_grad():
                _, logits = head.forward_with_aux(torch.from_numpy(f)[None])
            n = len(u.truth)
            curves.append(resample_curves(c, teacher.fps, n, ds.fps)[:, idx])
            post = logits[0].softmax(-1).numpy()
            posts.append(resample_curves(post, teacher.fps, n, ds.fps))
    ci = ds.channel_names.index(LIP_CLOSURE_CHANNEL)
    pp = VISEMES.index("PP")
    target = float(_VISEME_TARGETS[pp, ARKIT_52.index(LIP_CLOSURE_CHANNEL)])
    print(f"# {teacher.identity[:12]} ({args.teacher}) on {args.test}; p/b/m closure target {target}")

    def report(name: str, preds: list[np.ndarray]) -> None:
        m = evaluate_grouped(preds, truths, utts, ds, mean_vector=mean, by=("language",))
        by = "  ".join(
            f"{g}:{v['mse_ratio_to_mean']:.3f}/{v['lip_closure']:.2f}" for g, v in m["by_language"].items()
        )
        print(
            f"{name:<30} {m['mse_ratio_to_mean']:.4f}  lip {m['lip_closure']:.3f} (truth "
            f"{m['lip_closure_ground_truth']:.3f})  jitter {m['jitter_ratio']:.2f}  {by}",
            flush=True,
        )

    def with_closure(new: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for c, k in zip(curves, new):
            c = c.copy()
            c[:, ci] = k
            out.append(c)
        return out

    report("teacher", curves)
    for kind in ("hard", "soft"):
        rendered = [
            render_posteriors(np.eye(p.shape[1])[p.argmax(1)] if kind == "hard" else p, ds.fps)[:, idx]
            for p in posts
        ]
        report(
            f"max {kind} render",
            with_closure([np.maximum(c[:, ci], r[:, ci]) for c, r in zip(curves, rendered)]),
        )
    for gain in (1.0, 1.5, 2.0):
        new = [np.maximum(c[:, ci], np.minimum(1.0, gain * target * p[:, pp])) for c, p in zip(curves, posts)]
        report(f"max gain {gain:g} x P(PP)", with_closure(new))
    for sigma in (1.0, 2.0):
        for amount in (0.25, 0.5, 1.0):
            sharp = [
                np.clip(
                    c + amount * (c - scipy.ndimage.gaussian_filter1d(c, sigma, axis=0, mode="nearest")), 0, 1
                )
                for c in curves
            ]
            report(f"unsharp s{sigma:g} a{amount:g} closure", with_closure([s[:, ci] for s in sharp]))
            report(f"unsharp s{sigma:g} a{amount:g} all", [s.astype(np.float32) for s in sharp])

    peaks, missed = [], []
    for c, u in zip(curves, utts):
        anchors = frame_anchors(len(c), ds.fps)
        for ph in u.phonemes:
            if not is_bilabial(ph):
                continue
            inside = np.flatnonzero((anchors >= ph.start) & (anchors < ph.end))
            if len(inside) == 0:
                inside = np.array([int(np.argmin(np.abs(anchors - (ph.start + ph.end) / 2)))])
            peak = float(c[inside, ci].max())
            peaks.append(peak)
            if peak <= LIP_CLOSURE_THRESHOLD:
                missed.append((peak, 1000 * (ph.end - ph.start) / SAMPLE_RATE))
    if missed:
        p = np.array([m[0] for m in missed])
        d = np.array([m[1] for m in missed])
        bins = [0, 0.1, 0.2, 0.3, 0.4, 0.5]
        print(f"# missed bilabials: {len(missed)} of {len(peaks)}; peak closure histogram over {bins}: "
              f"{np.histogram(p, bins=bins)[0].tolist()}; duration ms 10/50/90 %: "
              f"{np.round(np.quantile(d, [0.1, 0.5, 0.9]), 1).tolist()}")  # fmt: skip


if __name__ == "__main__":
    main()
