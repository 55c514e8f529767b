"""Streaming students: block-by-block output equals the windowed model, frames come out exactly when due."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from students.model import PRESETS, Student, preset
from students.streaming import (
    CELL,
    Streamer,
    StreamingError,
    StreamingHead,
    StreamingStep,
    frame_anchor_of,
    head_points,
    point_due_cells,
    run_stream,
    streaming_macs_per_frame,
    torch_step_functions,
    windowed_macs_per_frame,
)
from teacher.constants import frame_anchors, num_frames

torch.set_num_threads(1)

NARROW = {"frontend_channels": (8, 8, 16), "context_channels": (16, 16), "head_hidden": (8,)}
CASES = {
    "tiny": dict(NARROW),
    "realtime": dict(NARROW),  # smoothing: 3 head points per frame, shared between neighbours
    "realtime60": {**NARROW, "fps": 60, "head_hidden": ()},  # 60 fps, no hidden head layer
    "edge": {},
    "causal": {},  # zero lookahead: frame 0 is due before any audio arrives
    "edge-mulaw": {"input_encoding": "mulaw"},  # companded input: the stream compands each block
    # fixed log-mel frontend: its 16 ms window reaches 192 samples into the previous block (the audio_tail state)
    "tiny-mel": {"frontend_channels": (16,), "context_channels": (16, 16), "head_hidden": (8,)},
    # the same frontend with realtime's window and its 3-frame smoothing
    "realtime-mel": {"frontend_channels": (16,), "context_channels": (16, 16), "head_hidden": (8,)},
    "edge-mel": {},  # an 8 ms filterbank window: one cell of audio tail
    "causal-mel": {"frontend_channels": (16,), "context_channels": (16, 16), "head_hidden": (8,)},
}


def _model(case: str) -> Student:
    torch.manual_seed(0)
    name = case if case in PRESETS else case.removesuffix("60").split("-")[0]
    model = Student(preset(name, **CASES[case])).eval()
    with torch.no_grad():  # weights large enough that every sample reaches the output (fixed log-mel kept)
        for p in (p for p in model.parameters() if p.requires_grad):
            p.normal_(0.0, 0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    return model


def _reference(model: Student, audio: np.ndarray) -> np.ndarray:
    anchors = frame_anchors(num_frames(len(audio), model.config.fps), model.config.fps)
    with torch.no_grad():
        return model.forward_full(torch.from_numpy(audio)[None], torch.from_numpy(anchors), pad=True)[
            0
        ].numpy()


def _stream(streamer: Streamer, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out, i = [], 0
    while i < len(audio):
        size = int(rng.choice([1, 7, 64, 333, 1000, 4096]))
        out.append(streamer.push(audio[i : i + size]))
        i += size
    out.append(streamer.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("case", CASES)
def test_random_blocks_equal_windowed_model(case: str) -> None:
    model = _model(case)
    rng = np.random.default_rng(1)
    audio = (0.3 * rng.standard_normal(4 * 16000 + 123)).astype(np.float32)
    streamed = _stream(Streamer(model), audio, rng)
    reference = _reference(model, audio)
    assert streamed.shape == reference.shape
    np.testing.assert_allclose(streamed, reference, atol=1e-5, rtol=0)
    # and the one-window exported form, zero-padded like the stream start/end
    padded = np.pad(audio, (model.left_context, model.window_samples))
    anchors = frame_anchors(len(reference), model.config.fps)
    for k in (0, 1, len(reference) // 2, len(reference) - 1):
        start = anchors[k]  # window of anchor a starts at a - left_context, i.e. a in padded coordinates
        with torch.no_grad():
            frame = model(torch.from_numpy(padded[None, start : start + model.window_samples]))[0].numpy()
        np.testing.assert_allclose(streamed[k], frame, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["realtime", "causal"])
def test_frames_come_out_exactly_when_their_audio_has_arrived(case: str) -> None:
    model = _model(case)
    audio = (0.3 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32)
    streamer = Streamer(model)
    counts = [len(streamer.push(audio[:0]))]  # before any audio
    for cell in range(len(audio) // CELL):
        counts.append(counts[-1] + len(streamer.push(audio[cell * CELL : (cell + 1) * CELL])))
    anchors = frame_anchors(num_frames(len(audio), model.config.fps), model.config.fps)
    for k, anchor in enumerate(anchors):
        ready_at = (
            anchor + model.lookahead_samples
        ) // CELL  # cells holding audio up to the window's last sample
        if ready_at < len(counts):
            assert counts[ready_at] == k + 1, f"frame {k} not out exactly after {ready_at} cells"


def test_state_of_silence_is_not_zero_and_reset_restarts() -> None:
    model = _model("edge")
    step = StreamingStep(model)
    state = step.initial_state()
    assert any(float(s.abs().max()) > 0 for s in state), "biases make the state of silence non-zero"
    with torch.no_grad():  # silence keeps the state where it is
        again = step(torch.zeros(1, CELL), *state)
    for a, b in zip(state, again):
        torch.testing.assert_close(a, b)
    audio = (0.3 * np.random.default_rng(3).standard_normal(9000)).astype(np.float32)
    streamer = Streamer(model)
    first = np.concatenate([streamer.push(audio), streamer.flush()])
    streamer.push(audio[:5000])
    streamer.reset()
    second = np.concatenate([streamer.push(audio), streamer.flush()])
    np.testing.assert_array_equal(first, second)


def test_host_loop_with_fixed_shape_modules_matches() -> None:
    model = _model("realtime")
    audio = (0.3 * np.random.default_rng(4).standard_normal(20000)).astype(np.float32)
    step, head = StreamingStep(model), StreamingHead(model)
    step_fn, head_fn = torch_step_functions(step, head)
    initial = [s.numpy() for s in step.initial_state()]
    out = run_stream(audio, step_fn, head_fn, initial_state=initial, block_samples=CELL, model=model)
    np.testing.assert_allclose(out, _reference(model, audio), atol=1e-5, rtol=0)
    shapes = [tuple(s.shape) for s in step(torch.zeros(1, CELL), *step.initial_state())]
    assert shapes == [*step.state_shapes(), step.history_shape()]  # states, then the head history


@pytest.mark.parametrize("case", ["realtime", "causal"])
def test_host_loop_feeds_blocks_of_cells_and_refuses_partial_cells(case: str) -> None:
    model = _model(case)
    audio = (0.3 * np.random.default_rng(5).standard_normal(21111)).astype(np.float32)
    head = StreamingHead(model)
    for cells in (3, 8):
        step = StreamingStep(model, cells_per_step=cells)
        step_fn, head_fn = torch_step_functions(step, head)
        initial = [s.numpy() for s in step.initial_state()]
        out = run_stream(
            audio, step_fn, head_fn, initial_state=initial, block_samples=step.block_samples, model=model
        )
        np.testing.assert_allclose(out, _reference(model, audio), atol=1e-5, rtol=0)
        history = step(torch.zeros(1, step.block_samples), *step.initial_state())[-1]
        assert tuple(history.shape) == step.history_shape() == (1, step.encoder_channels, step.span + cells)
    for bad in (100, 32, 0):
        with pytest.raises(StreamingError, match="multiple of 64"):
            run_stream(audio, step_fn, head_fn, initial_state=initial, block_samples=bad, model=model)


def test_anchor_and_due_formulas() -> None:
    for fps in (30, 60):
        np.testing.assert_array_equal(frame_anchor_of(np.arange(400), fps), frame_anchors(400, fps))
    model = _model("realtime")
    points = head_points(model, np.arange(3))
    d = model.config.smoothing_step
    np.testing.assert_array_equal(points[:, 1], frame_anchors(3, 30))
    np.testing.assert_array_equal(points[:, 2] - points[:, 0], [2 * d] * 3)
    last = point_due_cells(model, points).max(axis=1)
    np.testing.assert_array_equal(last, (frame_anchors(3, 30) + model.lookahead_samples) // CELL)


def test_mac_counts() -> None:
    model = Student(preset("tiny")).eval()
    cfg = model.config
    cells = model.window_samples // CELL
    frontend = sum(
        (model.window_samples // int(np.prod(cfg.strides[: i + 1]))) * c_out * c_in * s
        for i, (c_in, c_out, s) in enumerate(
            zip((1, *cfg.frontend_channels[:-1]), cfg.frontend_channels, cfg.strides)
        )
    )
    ctx_in = (cfg.frontend_channels[-1], *cfg.context_channels[:-1])
    context, positions = 0, cells
    for c_in, c_out, dil in zip(ctx_in, cfg.context_channels, cfg.context_dilations):
        positions -= 2 * dil
        context += positions * c_out * c_in * 3
    neck = cfg.head_bottleneck  # a linear 1x1 conv at every head position (tiny has one)
    assert neck > 0 and positions == cfg.head_kernel
    bottleneck = positions * neck * cfg.context_channels[-1]
    head = cfg.head_hidden[0] * neck * cfg.head_kernel + len(cfg.channel_names) * cfg.head_hidden[0]
    assert windowed_macs_per_frame(model) == frontend + context + bottleneck + head
    per_cell = (
        frontend // cells
        + sum(o * i * 3 for i, o in zip(ctx_in, cfg.context_channels))
        + neck * cfg.context_channels[-1]
    )
    assert streaming_macs_per_frame(model) == pytest.approx(16000 / 30 / 64 * per_cell + head)
    assert streaming_macs_per_frame(model) < windowed_macs_per_frame(model) / 5
