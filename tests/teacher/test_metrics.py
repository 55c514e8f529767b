"""Every metric against values worked out by hand on tiny arrays (see the comments for the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from teacher.dataset import Phoneme
from teacher.metrics import (
    MetricsError,
    evaluate,
    format_metrics,
    is_bilabial,
    jitter,
    lip_closure,
    mae,
    mse,
    velocity_mse,
)

NAMES = ["jawOpen", "mouthClose"]
PRED = [np.array([[0, 0], [2, 1], [0, 0]], np.float32), np.array([[1, 0], [1, 0]], np.float32)]
TRUTH = [np.array([[0, 0], [0, 1], [0, 1]], np.float32), np.array([[1, 0], [1, 0]], np.float32)]
# 30 fps anchors of frames 0, 1, 2: samples 0, 512, 1088
PHONEMES = [
    [
        Phoneme(400, 600, "m", "PP"),  # frame 1 inside: pred 1 closed, truth 1 closed
        Phoneme(0, 100, "b", ""),  # frame 0 inside: pred 0, truth 0
        Phoneme(1100, 1200, "p", ""),  # no anchor inside, nearest frame 2: pred 0, truth 1 closed
        Phoneme(600, 700, "a", "AA"),  # not bilabial
    ],
    [Phoneme(0, 500, "m", "")],  # frame 0: pred 0, truth 0
]


@pytest.fixture
def result():
    return evaluate(PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30)


def test_errors_pooled_over_frames(result):
    # errors: utterance 1 jaw [0, 2, 0], close [0, 0, -1]; utterance 2 all 0 -> 10 values
    assert result["mse"] == pytest.approx(5 / 10)
    assert result["mae"] == pytest.approx(3 / 10)
    assert result["mse_per_channel"] == pytest.approx({"jawOpen": 4 / 5, "mouthClose": 1 / 5})
    assert result["mae_per_channel"] == pytest.approx({"jawOpen": 2 / 5, "mouthClose": 1 / 5})
    assert result["frames"] == 5 and result["utterances"] == 2


def test_velocity_and_jitter(result):
    # first differences: pred1 [[2,1],[-2,-1]] truth1 [[0,1],[0,0]] -> squared errors 4,0,4,1; utt 2 adds 0,0
    assert result["velocity_mse"] == pytest.approx(9 / 6)
    # second differences: pred1 [[-4,-2]] -> 3; truth1 [[0,-1]] -> 0.5; utt 2 (2 frames) has none
    assert result["jitter"] == pytest.approx(3.0)
    assert result["jitter_ground_truth"] == pytest.approx(0.5)
    assert result["jitter_ratio"] == pytest.approx(6.0)


def test_mean_baseline(result):
    # truth mean [0.4, 0.4]; squared deviations sum 1.2 per channel -> 2.4 / 10
    assert result["mse_mean_baseline"] == pytest.approx(0.24)
    assert result["mse_ratio_to_mean"] == pytest.approx(0.5 / 0.24)
    given = evaluate(PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30, mean_vector=np.zeros(2))
    assert given["mse_mean_baseline"] == pytest.approx(4 / 10)  # sum of truth squared / 10


def test_lip_closure(result):
    assert result["lip_closure"] == pytest.approx(1 / 4)
    assert result["lip_closure_ground_truth"] == pytest.approx(2 / 4)
    high = evaluate(PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30, closure_threshold=0.99)
    assert high["lip_closure_ground_truth"] == pytest.approx(2 / 4)
    strict = evaluate(PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30, closure_threshold=1.0)
    assert strict["lip_closure"] == 0.0  # "exceeds", not "reaches"
    only_m = evaluate(
        PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30, is_bilabial=lambda p: p.phoneme == "m"
    )
    assert only_m["lip_closure"] == pytest.approx(1 / 2)


def test_lip_closure_nan_without_channel_or_bilabials():
    no_close = evaluate(
        [p[:, :1] for p in PRED], [t[:, :1] for t in TRUTH], PHONEMES, channel_names=["jawOpen"], fps=30
    )
    assert math.isnan(no_close["lip_closure"]) and math.isnan(no_close["lip_closure_ground_truth"])
    assert math.isnan(lip_closure([np.ones(3)], [[Phoneme(0, 99, "a", "AA")]], fps=30))


def test_building_blocks():
    a = np.array([[0.0], [1.0], [3.0], [6.0]])
    b = np.zeros((4, 1))
    assert mse(a, b) == pytest.approx(46 / 4) and mae(a, b) == pytest.approx(10 / 4)
    assert velocity_mse(a, b) == pytest.approx((1 + 4 + 9) / 3)
    assert jitter(a) == pytest.approx(1.0)  # second differences 1, 1
    assert math.isnan(jitter(a[:2])) and math.isnan(velocity_mse(a[:1], b[:1]))


def test_is_bilabial():
    assert is_bilabial(Phoneme(0, 1, "x", "PP"))  # the viseme decides when there is one
    assert not is_bilabial(Phoneme(0, 1, "m", "nn"))
    assert is_bilabial(Phoneme(0, 1, "ˈm", "")) and is_bilabial(Phoneme(0, 1, "b", ""))
    assert not is_bilabial(Phoneme(0, 1, "B", ""))  # espeak's Spanish approximant keeps the lips apart
    assert not is_bilabial(Phoneme(0, 1, "f", ""))


def test_mismatched_shapes_refused():
    with pytest.raises(MetricsError, match="utterance 1"):
        evaluate(PRED, [TRUTH[0], TRUTH[1][:1]], PHONEMES, channel_names=NAMES, fps=30)
    with pytest.raises(MetricsError, match="mean_vector"):
        evaluate(PRED, TRUTH, PHONEMES, channel_names=NAMES, fps=30, mean_vector=np.zeros(3))


def test_format_metrics_table(result):
    text = format_metrics(result)
    assert "mse_ratio_to_mean" in text and "2.08333" in text and "frames" in text
    assert "worst channels by MSE: jawOpen 0.8, mouthClose 0.2" in text
