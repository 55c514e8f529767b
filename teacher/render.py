"""Rendering a teacher's viseme posteriors through the coarticulation model of ``teacher.groundtruth``.

A teacher trained with the auxiliary viseme head (``--viseme-weight``) also says, frame by frame, which viseme it
hears. :func:`render_posteriors` turns that into curves the way the corpus turns phoneme intervals into truth:

1. the per-frame argmax is cut into runs; each run becomes one segment from half a frame before its first anchor
   to half a frame after its last (:func:`viseme_segments`), carrying the mean posterior over its frames;
2. each segment's coarticulation weight over time is the Cohen--Massaro dominance of its argmax viseme
   (``teacher.groundtruth.dominance_weights``), and its target is the *posterior-weighted* mean of the viseme
   targets. The model is linear in the targets, so this is the posterior mean of the renders with hard targets.

``TeacherConfig.render_blend`` = ``b`` makes the teacher's curves ``(1 - b) * regressed + b * rendered`` on every
ARKit channel the render knows (others stay regressed). On the default corpus the two views err differently and
their average beats either (reports/bench/teacher_render.txt).

**Caveat.** The render *is* the generator of the embedded corpus's ground truth (same dominance functions, same
viseme targets), so on that corpus it is a prior that is exactly right by construction, and the gain it measures
there overstates what it would give on captured animation, whose lips follow no such model. Keep
``render_blend`` at 0 for a teacher trained on your own captured data, unless you have measured it there.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from teacher.constants import ARKIT_52, SAMPLE_RATE, frame_anchors
from teacher.groundtruth import VISEMES, dominance_weights, segment_targets


def viseme_segments(posteriors: np.ndarray, fps: int) -> list[SimpleNamespace]:
    """Runs of the per-frame argmax of ``posteriors`` [F, len(VISEMES)] as segments (``start``/``end`` in samples,
    ``viseme``, ``phoneme`` = the viseme's name, ``posterior`` = the run's mean posterior)."""
    posteriors = np.asarray(posteriors, dtype=np.float64)
    if posteriors.ndim != 2 or posteriors.shape[1] != len(VISEMES):
        msg = f"viseme posteriors must be [frames, {len(VISEMES)}], got {list(posteriors.shape)}"
        raise ValueError(msg)
    labels = posteriors.argmax(axis=1)
    anchors = frame_anchors(len(labels), fps).astype(np.float64)
    half = SAMPLE_RATE / fps / 2
    edges = np.flatnonzero(np.diff(labels)) + 1
    out = []
    for s, e in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(labels)]])):
        v = VISEMES[int(labels[s])]
        out.append(
            SimpleNamespace(
                start=anchors[s] - half,
                end=anchors[e - 1] + half,
                viseme=v,
                phoneme=v,
                posterior=posteriors[s:e].mean(axis=0),
            )
        )
    return out


_VISEME_TARGETS = segment_targets([SimpleNamespace(viseme=v, phoneme=v) for v in VISEMES])  # [V, 52]


def render_posteriors(posteriors: np.ndarray, fps: int) -> np.ndarray:
    """ARKit-52 curves float32 [F, 52] at the frame anchors from viseme posteriors [F, len(VISEMES)]."""
    posteriors = np.asarray(posteriors, dtype=np.float64)
    if len(posteriors) == 0:
        return np.zeros((0, len(ARKIT_52)), dtype=np.float32)
    segments = viseme_segments(posteriors, fps)
    times = frame_anchors(len(posteriors), fps) / SAMPLE_RATE
    targets = np.stack([seg.posterior for seg in segments]) @ _VISEME_TARGETS
    return np.clip(dominance_weights(segments, times) @ targets, 0.0, 1.0).astype(np.float32)


def blend_rendered(
    regressed: np.ndarray, posteriors: np.ndarray, fps: int, channel_names: list[str], weight: float
) -> np.ndarray:
    """``(1 - weight) * regressed + weight * rendered`` on the channels of ``channel_names`` that are ARKit-52 ones."""
    if weight <= 0:
        return regressed
    rendered = render_posteriors(posteriors, fps)
    mine = [i for i, name in enumerate(channel_names) if name in ARKIT_52]
    arkit = [ARKIT_52.index(channel_names[i]) for i in mine]
    out = regressed.copy()
    out[:, mine] = (1 - weight) * regressed[:, mine] + weight * rendered[:, arkit]
    return out
