"""compress.cmd_compress: split_windows cuts the model's windows of the picked frames; evaluate_binary's worker
processes change no number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_models import tiny_student, toy_split

from compress.cmd_compress import evaluate_binary, split_windows
from compress.export import ExportError, _export_onnx_fp32, run_binary
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


def test_evaluate_binary_in_worker_processes_gives_the_same_metrics(tmp_path):
    """A slow binary's test evaluation is spread over processes; the outputs, so the metrics, do not change."""
    model = tiny_student()
    split = toy_split(model)
    split.targets[2][:] = np.nan  # an utterance without complete truth is skipped either way
    path = tmp_path / "toy.fp32.onnx"
    _export_onnx_fp32(model, torch.zeros(1, model.window_samples), path)
    serial = evaluate_binary(path, model, split, workers=1)
    parallel = evaluate_binary(path, model, split, workers=2, parallel_after_s=0.0)
    assert json.dumps(serial, sort_keys=True) == json.dumps(
        parallel, sort_keys=True
    )  # NaN lip keys: no p/b/m
    assert serial["mse"] == pytest.approx(
        np.mean(
            [
                (
                    run_binary(path, utterance_windows(split.audio[i], frame_anchors(15, 30), model))
                    - split.targets[i]
                )
                ** 2
                for i in (0, 1, 3)
            ]
        ),
        rel=1e-5,
    )
    with pytest.raises(ExportError, match="onnxruntime cannot run"):
        (tmp_path / "broken.onnx").write_bytes(b"not a model")
        evaluate_binary(tmp_path / "broken.onnx", model, split, workers=2, parallel_after_s=0.0)
