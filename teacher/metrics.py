"""Quality metrics every stage reports the same way: curve error, motion error, smoothness and lip closure.

All errors are pooled over every frame of every utterance (a long utterance weighs more than a short one).
Units: curve values as stored (ARKit weights in [0, 1]); ``velocity_mse`` is the MSE of per-frame first
differences (units per frame, not per second, so 30 and 60 fps runs are not directly comparable); ``jitter`` is
the mean absolute second difference (units per frame squared). Lip closure asks whether the mouth actually shuts
on bilabials (p, b, m), the error viewers notice first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from teacher.constants import LIP_CLOSURE_CHANNEL, LIP_CLOSURE_THRESHOLD, frame_anchors
from teacher.dataset import Phoneme
from teacher.errors import FacedistillError
from teacher.groundtruth import BILABIAL_VISEME

# Phoneme symbols (espeak-ng mnemonics and IPA, stress/length marks stripped) that close the lips; used only when
# an interval carries no viseme. Case matters: espeak's "B" is the Spanish approximant, lips apart.
BILABIAL_PHONEMES = frozenset({"p", "b", "m", "m-", "pF", "pʰ", "bʱ", "pʲ", "bʲ", "mʲ", "m̩"})


class MetricsError(FacedistillError, ValueError):
    """Predictions and ground truth that cannot be compared (shape or channel mismatch)."""


def is_bilabial(ph: Phoneme) -> bool:
    """True for a p/b/m interval: its viseme is teacher.groundtruth's bilabial class ("PP"), or, when it has no
    viseme, its phoneme symbol is a bilabial stop or nasal."""
    if ph.viseme:
        return ph.viseme == BILABIAL_VISEME
    return ph.phoneme.strip().strip("ˈˌː'\",:") in BILABIAL_PHONEMES


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))))


def velocity_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """MSE of per-frame first differences [F-1, C] (units per frame); NaN for fewer than 2 frames."""
    if len(pred) < 2:
        return float("nan")
    return mse(np.diff(np.asarray(pred, np.float64), axis=0), np.diff(np.asarray(truth, np.float64), axis=0))


def jitter(curves: np.ndarray) -> float:
    """Mean absolute second difference (units per frame squared); NaN for fewer than 3 frames."""
    if len(curves) < 3:
        return float("nan")
    return float(np.mean(np.abs(np.diff(np.asarray(curves, np.float64), n=2, axis=0))))


def lip_closure_hits(
    curve: np.ndarray,
    phonemes: Sequence[Phoneme],
    *,
    fps: int,
    threshold: float = LIP_CLOSURE_THRESHOLD,
    is_bilabial: Callable[[Phoneme], bool] = is_bilabial,
) -> tuple[int, int]:
    """(closed, total) over the bilabial intervals of one utterance.

    An interval counts as closed when ``curve`` (the closure channel, [F]) exceeds ``threshold`` in at least one
    frame whose anchor lies in [start, end); when no anchor lies inside, the frame nearest the interval is used.
    """
    curve = np.asarray(curve)
    anchors = frame_anchors(len(curve), fps)
    closed = total = 0
    for ph in phonemes:
        if not is_bilabial(ph):
            continue
        total += 1
        inside = np.flatnonzero((anchors >= ph.start) & (anchors < ph.end))
        if len(inside) == 0:
            centre = (ph.start + ph.end) / 2
            inside = np.array([int(np.argmin(np.abs(anchors - centre)))])
        closed += bool((curve[inside] > threshold).any())
    return closed, total


def lip_closure(
    curves: Sequence[np.ndarray],
    phonemes: Sequence[Sequence[Phoneme]],
    *,
    fps: int,
    threshold: float = LIP_CLOSURE_THRESHOLD,
    is_bilabial: Callable[[Phoneme], bool] = is_bilabial,
) -> float:
    """Fraction of bilabial intervals closed, pooled over utterances (curves are [F] closure channels); NaN if none."""
    closed = total = 0
    for curve, phs in zip(curves, phonemes, strict=True):
        c, t = lip_closure_hits(curve, phs, fps=fps, threshold=threshold, is_bilabial=is_bilabial)
        closed += c
        total += t
    return closed / total if total else float("nan")


def _ratio(num: float, den: float) -> float:
    if den == 0 or not np.isfinite(den):
        return float("nan") if num == 0 or not np.isfinite(num) else float("inf")
    return num / den


def evaluate(
    preds: list[np.ndarray],
    truths: list[np.ndarray],
    phonemes: list[list[Phoneme]],
    *,
    channel_names: Sequence[str],
    fps: int,
    mean_vector: np.ndarray | None = None,
    closure_channel: str = LIP_CLOSURE_CHANNEL,
    closure_threshold: float = LIP_CLOSURE_THRESHOLD,
    is_bilabial: Callable[[Phoneme], bool] = is_bilabial,
) -> dict:
    """Every metric of predictions against ground truth, pooled over utterances (see the module docstring).

    ``mean_vector`` is the training-label mean used for the predict-the-mean baseline (truth mean if None).
    Lip-closure keys are NaN when the closure channel is absent or no bilabial interval exists.
    """
    names = list(channel_names)
    n_ch = len(names)
    if not (len(preds) == len(truths) == len(phonemes)):
        msg = f"evaluate: {len(preds)} predictions, {len(truths)} truths, {len(phonemes)} phoneme lists"
        raise MetricsError(msg)
    if not preds:
        msg = "evaluate: no utterances to evaluate"
        raise MetricsError(msg)
    for i, (p, t) in enumerate(zip(preds, truths)):
        if p.shape != t.shape or p.ndim != 2 or p.shape[1] != n_ch:
            msg = f"evaluate: utterance {i} prediction {p.shape} vs truth {t.shape} vs {n_ch} channels"
            raise MetricsError(msg)
    P = np.concatenate([np.asarray(p, np.float64) for p in preds])
    T = np.concatenate([np.asarray(t, np.float64) for t in truths])
    err = P - T
    mse_ch = np.mean(err**2, axis=0)
    mae_ch = np.mean(np.abs(err), axis=0)

    vel_p = [np.diff(np.asarray(p, np.float64), axis=0) for p in preds if len(p) >= 2]
    vel_t = [np.diff(np.asarray(t, np.float64), axis=0) for t in truths if len(t) >= 2]
    vel = mse(np.concatenate(vel_p), np.concatenate(vel_t)) if vel_p else float("nan")

    def pooled_jitter(curves: list[np.ndarray]) -> float:
        acc = [np.abs(np.diff(np.asarray(c, np.float64), n=2, axis=0)) for c in curves if len(c) >= 3]
        return float(np.mean(np.concatenate(acc))) if acc else float("nan")

    jit, jit_gt = pooled_jitter(preds), pooled_jitter(truths)

    mean = T.mean(axis=0) if mean_vector is None else np.asarray(mean_vector, np.float64).reshape(-1)
    if mean.shape != (n_ch,):
        msg = f"evaluate: mean_vector has shape {mean.shape}, expected ({n_ch},)"
        raise MetricsError(msg)
    baseline = float(np.mean((T - mean) ** 2))
    total_mse = float(np.mean(err**2))

    if closure_channel in names:
        k = names.index(closure_channel)
        opts = {"fps": fps, "threshold": closure_threshold, "is_bilabial": is_bilabial}
        closure = lip_closure([p[:, k] for p in preds], phonemes, **opts)
        closure_gt = lip_closure([t[:, k] for t in truths], phonemes, **opts)
    else:
        closure = closure_gt = float("nan")

    return {
        "mse": total_mse,
        "mae": float(np.mean(np.abs(err))),
        "mse_per_channel": {n: float(v) for n, v in zip(names, mse_ch)},
        "mae_per_channel": {n: float(v) for n, v in zip(names, mae_ch)},
        "velocity_mse": vel,
        "lip_closure": closure,
        "lip_closure_ground_truth": closure_gt,
        "jitter": jit,
        "jitter_ground_truth": jit_gt,
        "jitter_ratio": _ratio(jit, jit_gt),
        "mse_mean_baseline": baseline,
        "mse_ratio_to_mean": _ratio(total_mse, baseline),
        "frames": int(len(P)),
        "utterances": len(preds),
    }


def format_metrics(metrics: dict, *, top_channels: int = 5) -> str:
    """A small aligned text table of the scalar metrics plus the worst channels by MSE, for CLIs and logs."""
    lines = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            continue
        text = f"{value:d}" if isinstance(value, int) else f"{value:.6g}"
        lines.append(f"  {key:<26}{text:>14}")
    per_channel = metrics.get("mse_per_channel") or {}
    if per_channel and top_channels > 0:
        worst = sorted(per_channel.items(), key=lambda kv: -kv[1])[:top_channels]
        lines.append(f"  worst channels by MSE: {', '.join(f'{n} {v:.4g}' for n, v in worst)}")
    return "\n".join(lines)
