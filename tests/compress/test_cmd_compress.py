"""compress.cmd_compress.split_windows: the windows it cuts are the model's windows of the picked frames."""

from __future__ import annotations

import numpy as np
import pytest
from toy_models import tiny_student, toy_split

from compress.cmd_compress import split_windows
from students.data import utterance_windows
from teacher.constants import frame_anchors


@pytest.mark.parametrize("part,first", [("calib", 0), ("heldout", 1)])
def test_split_windows_match_every_frame_window(part, first):
    model = tiny_student()
    split = toy_split(model)
    # every frame of the even (calib) or odd (heldout) utterances, cut the slow way
    picks = range(first, len(split.audio), 2)
    every = np.concatenate(
        [
            utterance_windows(split.audio[i], frame_anchors(len(split.targets[i]), split.fps), model)
            for i in picks
        ]
    )
    rows = np.concatenate([split.targets[i] for i in picks])
    x, y = split_windows(split, model, part=part, count=11, seed=3)
    assert x.shape == (11, model.window_samples) and y.shape == (11, rows.shape[1])
    idx = np.random.default_rng(3).permutation(len(every))[:11]
    np.testing.assert_array_equal(x, every[idx])
    np.testing.assert_array_equal(y, rows[idx])
    # asking for more windows than there are frames gives every frame once
    x_all, _ = split_windows(split, model, part=part, count=10_000, seed=3)
    assert len(x_all) == len(every)
    assert len(np.unique(x_all, axis=0)) == len(np.unique(every, axis=0))
