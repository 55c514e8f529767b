"""Streaming students: the same frames as the windowed model, at a fraction of the work per frame.

A student's frontend convs have kernel == stride and multiply to 64 samples, and every later conv is valid, so the
encoder can run one 64-sample *cell* at a time if each context layer keeps the last ``2 * dilation`` grid positions
of its input. The head reads a buffer of the last ``K`` encoder positions (``K`` = head kernel) and runs only at
*head points*, never at every cell:

* frame ``k`` (anchor ``a_k``, :func:`frame_anchor_of`) is the head at ``a_k``; with smoothing it is the mean of the
  head at ``a_k - d``, ``a_k``, ``a_k + d`` (:func:`head_points`). At 30 fps ``a_k + d == a_{k+1} - d`` for two
  frames in three, so a host that reuses that shared point runs the head 7 times per 3 frames instead of 9;
* the head at point ``p`` reads audio up to ``p + future_samples``: it is due once ``(p + future_samples) / 64``
  cells have been consumed (:func:`point_due_cells`), so frame ``k`` is complete at ``(a_k + lookahead) / 64``;
* the stream starts as if infinitely many zeros came before it (the windowed model's zero padding). Convs have
  biases, so that state is not zero: :meth:`StreamingStep.initial_state` computes it by running the encoder on zeros.

Two pieces, both plain ``nn.Module`` with fixed shapes so they export: :class:`StreamingStep` (a block of ``B`` cells
+ state in -> state + head history out; the last state is the head buffer) and :class:`StreamingHead` (head buffer
-> curves at one point). The history ``[1, C_enc, head_span + B]`` holds the head buffer after every cell of the
block: after a block that took the cell count from ``c0`` to ``c0 + B``, the buffer at count ``c`` is
``history[:, :, c - c0 : c - c0 + head_span]``. :func:`run_stream` is the host loop for any backend. :class:`Streamer` is the Python form: ``push`` arbitrary
blocks, ``flush`` at the end; its output equals ``model.forward_full(audio, frame_anchors(...), pad=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from students.model import Student
from teacher.constants import ANCHOR_QUANTUM, SAMPLE_RATE, frame_anchors, num_frames
from teacher.errors import FacedistillError

CELL = ANCHOR_QUANTUM  # samples of audio per unit of encoder work (4 ms)


class StreamingError(FacedistillError, ValueError):
    """A bad streaming request (wrong block shape, unusable step size)."""


def frame_anchor_of(frames: np.ndarray, fps: int) -> np.ndarray:
    """Anchor sample of each frame index in ``frames``, equal to ``frame_anchors`` but O(len) for any index.

    Anchors repeat every second: frame ``k + fps`` sits exactly ``SAMPLE_RATE`` samples after frame ``k`` (that shift
    is 250 cells, an even number, so round-half-to-even rounds both alike).
    """
    k = np.asarray(frames, dtype=np.int64)
    return frame_anchors(fps, fps)[k % fps] + SAMPLE_RATE * (k // fps)


def head_points(model: Student, frames: np.ndarray) -> np.ndarray:
    """Samples where the head runs for each frame: ``[F, 1]`` (anchor) or ``[F, 3]`` (anchor -/+ d, smoothing)."""
    step = model.config.smoothing_step
    offsets = np.array([-step, 0, step] if step else [0], dtype=np.int64)
    return frame_anchor_of(frames, model.config.fps)[:, None] + offsets[None, :]


def point_due_cells(model: Student, points: np.ndarray) -> np.ndarray:
    """Cells of audio that must have been consumed before the head can run at each point (sample index)."""
    return (np.asarray(points, dtype=np.int64) + model.config.future_samples) // CELL


def head_runs_per_frame(model: Student) -> float:
    """Head evaluations per frame when shared smoothing points are reused (1, or 7/3 at 30 fps with smoothing)."""
    fps = model.config.fps
    first = np.unique(head_points(model, np.arange(1)))
    period = np.unique(head_points(model, np.arange(fps + 1)))  # one second later the pattern repeats
    return (len(period) - len(first)) / fps


def head_span(model: Student) -> int:
    """Encoder positions the head buffer holds: the kernel of the first head conv."""
    return (model.head[0] if len(model.head) else model.out).kernel_size[0]


class StreamingStep(nn.Module):
    """``forward(cells [1, 64 n], *states) -> (*new states, history)``: advance the encoder by ``n`` cells.

    ``history`` ``[1, C_enc, head_span + n]`` is the old head buffer followed by the ``n`` new encoder positions, so
    the head buffer after the ``j``-th cell of the block (``1 <= j <= n``) is ``history[:, :, j : j + head_span]``.
    Exported with ``n = cells_per_step`` (fixed shapes).

    States, in order: one per context layer ``[1, C_in, 2 * dilation]`` (the last input positions of that layer),
    then the head buffer ``[1, C_enc, head_span]`` (the last encoder outputs). Shares the student's weights and
    module names (``frontend.i``, ``context.i``), so int8 ``keep_float`` names carry over.
    """

    def __init__(self, model: Student, cells_per_step: int = 1):
        super().__init__()
        if cells_per_step < 1:
            msg = f"streaming: cells_per_step must be >= 1, got {cells_per_step}"
            raise StreamingError(msg)
        self.cells_per_step = int(cells_per_step)
        self.input_encoding = model.input_encoding  # identity for linear students and binary forms
        self.logmel = model.logmel
        # a log-mel frontend reads window - 64 samples before each new cell: they are kept as the first state
        self.tail = model.config.logmel_samples - CELL if model.logmel is not None else 0
        self.frontend = model.frontend
        self.context = model.context
        self.bottleneck = model.bottleneck
        self.span = head_span(model)
        self.encoder_channels = (
            model.head[0] if len(model.head) else model.out
        ).in_channels  # what the head reads

    @property
    def block_samples(self) -> int:
        return CELL * self.cells_per_step

    def state_names(self) -> list[str]:
        audio = ["audio_tail"] if self.tail else []
        return [*audio, *(f"context{i}_state" for i in range(len(self.context))), "head_buffer"]

    def state_shapes(self) -> list[tuple[int, int, int]]:
        audio = [(1, 1, self.tail)] if self.tail else []
        shapes = [(1, conv.in_channels, 2 * conv.dilation[0]) for conv in self.context]
        return [*audio, *shapes, (1, self.encoder_channels, self.span)]

    def _frontend(self, audio: torch.Tensor) -> torch.Tensor:
        """Input encoding, log-mel (if any) and frontend convs: [1, N] audio -> [1, C, positions]."""
        x = self.input_encoding(audio)
        x = self.logmel(x) if self.logmel is not None else x.unsqueeze(1)
        for conv in self.frontend:
            x = F.relu(conv(x))
        return x

    def history_shape(self) -> tuple[int, int, int]:
        return (1, self.encoder_channels, self.span + self.cells_per_step)

    @torch.no_grad()
    def initial_state(self) -> list[torch.Tensor]:
        """The state after an endless run of zero audio (per channel constant; not zero because of biases)."""
        receptive_cells = 1 + sum(2 * conv.dilation[0] for conv in self.context)
        dtype = next(self.parameters()).dtype
        x = self._frontend(torch.zeros(1, self.tail + CELL * receptive_cells, dtype=dtype))
        states = [torch.zeros(1, 1, self.tail, dtype=dtype)] if self.tail else []
        for conv in self.context:
            states.append(x[:, :, :1].expand(-1, -1, 2 * conv.dilation[0]).clone())
            x = F.relu(conv(x))
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        states.append(x[:, :, :1].expand(-1, -1, self.span).clone())
        return states

    def advance(
        self, cells: torch.Tensor, states: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """New states for ``cells`` [1, 64 n] (any n), plus the head history [1, C, head_span + n]."""
        new_states = []
        if self.tail:  # the log-mel window of the first new cell starts in the previous block
            audio = torch.cat([states[0][:, 0], cells], dim=1)
            new_states.append(audio[:, None, audio.shape[1] - self.tail :])
            states = states[1:]
            x = self._frontend(audio)
        else:
            x = self._frontend(cells)
        for conv, state in zip(self.context, states):
            x = torch.cat([state, x], dim=2)
            new_states.append(x[:, :, x.shape[2] - state.shape[2] :])
            x = F.relu(conv(x))
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        history = torch.cat([states[-1], x], dim=2)
        new_states.append(history[:, :, history.shape[2] - self.span :])
        return new_states, history

    def forward(self, cells: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        new_states, history = self.advance(cells, states)
        return (*new_states, history)


class StreamingHead(nn.Module):
    """``forward(head_buffer [B, C_enc, K]) -> curves [B, C]``: the head at one head point (before smoothing)."""

    def __init__(self, model: Student):
        super().__init__()
        self.head = model.head
        self.out = model.out

    def forward(self, buffer: torch.Tensor) -> torch.Tensor:
        h = buffer
        for conv in self.head:
            h = F.relu(conv(h))
        return torch.sigmoid(self.out(h))[:, :, 0]


class Streamer:
    """Frame-exact streaming inference in Python: ``push(block) -> new frames [n, C]``, ``flush()`` at the end.

    Blocks may have any length (audio is buffered to whole 64-sample cells). ``flush`` zero-pads the stream like
    ``forward_full(pad=True)`` so every frame of the clip comes out, then resets for a new stream. A live stream cannot
    know where it ends, so with zero lookahead a frame anchored exactly at the end can already have been emitted.
    """

    def __init__(self, model: Student):
        self.model = model.eval()
        self.step = StreamingStep(model)
        self.head = StreamingHead(model)
        self._max_points = (
            int(np.ceil((2 * model.config.smoothing_step + 1) / CELL)) + 2
        )  # frames with pending points
        self.reset()

    def reset(self) -> None:
        self._states = self.step.initial_state()
        self._pending = np.zeros(0, dtype=np.float32)
        self._samples = 0  # audio samples pushed (not counting flush padding)
        self._cells = 0  # cells consumed by the encoder
        self._next_frame = 0
        self._curves: dict[int, np.ndarray] = {}  # head point (sample) -> curves, until its frames are out

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            msg = f"Streamer.push: expected a 1-D block of mono samples, got shape {block.shape}"
            raise StreamingError(msg)
        self._samples += len(block)
        audio = np.concatenate([self._pending, block])
        usable = len(audio) - len(audio) % CELL
        self._pending = audio[usable:]
        return self._consume(audio[:usable], limit=None)

    def flush(self) -> np.ndarray:
        """Zero-pad to the end of the stream, return the remaining frames, and reset."""
        total = num_frames(self._samples, self.model.config.fps)
        last_due = int(point_due_cells(self.model, head_points(self.model, np.array([total - 1]))).max())
        cells = max(last_due, self._cells + (1 if len(self._pending) else 0))
        audio = np.zeros(CELL * max(0, cells - self._cells), dtype=np.float32)
        audio[: len(self._pending)] = self._pending
        frames = self._consume(audio, limit=total)
        self.reset()
        return frames

    @torch.no_grad()
    def _consume(self, audio: np.ndarray, *, limit: int | None) -> np.ndarray:
        before, n = self._cells, len(audio) // CELL
        if n:
            self._states, history = self.step.advance(torch.from_numpy(audio)[None], self._states)
        else:
            history = self._states[-1]
        self._cells += n
        # anchors are >= 1 cell apart: only these frames can have a head point due by now
        frames = np.arange(self._next_frame, self._next_frame + n + self._max_points, dtype=np.int64)
        points = head_points(self.model, frames)
        due = point_due_cells(self.model, points)
        new = sorted(
            {int(p) for p, d in zip(points.ravel(), due.ravel()) if before <= d <= self._cells}
            - set(self._curves)
        )
        if new:
            starts = point_due_cells(self.model, np.array(new)) - before
            span = self.step.span
            buffers = torch.stack([history[0, :, j : j + span] for j in starts.tolist()])
            self._curves.update(zip(new, self.head(buffers).numpy()))
        ready = frames[due.max(axis=1) <= self._cells]
        if limit is not None:
            ready = ready[ready < limit]
        out = [np.mean([self._curves[int(p)] for p in points[k - self._next_frame]], axis=0) for k in ready]
        if len(ready):
            self._next_frame = int(ready[-1]) + 1
            first_needed = int(head_points(self.model, np.array([self._next_frame])).min())
            self._curves = {p: c for p, c in self._curves.items() if p >= first_needed}
        return np.asarray(out, dtype=np.float32).reshape(len(out), len(self.model.config.channel_names))


def run_stream(
    audio: np.ndarray,
    encoder_step: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]],
    head: Callable[[np.ndarray], np.ndarray],
    *,
    initial_state: Sequence[np.ndarray],
    block_samples: int,
    model: Student,
) -> np.ndarray:
    """The host loop of an exported streaming model over a whole clip: step every block, head at each due point.

    ``encoder_step(block [1, block_samples], states) -> [*states, history]`` and ``head(head_buffer) -> [1, C]``
    wrap any backend (PyTorch, onnxruntime, LiteRT); ``block_samples`` is any multiple of 64 (``B`` cells). A head
    point due at cell count 0 runs on the initial head buffer; one due at count ``c`` inside the block that took the
    count from ``c0`` to ``c0 + B`` runs on ``history[:, :, c - c0 : c - c0 + head_span]``. Shared smoothing points
    run the head once. The clip is zero-padded to whole blocks past its last due point; the result equals
    ``model.forward_full(audio, anchors, pad=True)`` with ``anchors = frame_anchors(num_frames(len(audio), fps), fps)``.
    """
    if block_samples < CELL or block_samples % CELL:
        msg = f"run_stream: block_samples must be a positive multiple of {CELL} (whole cells), not {block_samples}"
        raise StreamingError(msg)
    cells_per_block = block_samples // CELL
    total = num_frames(len(audio), model.config.fps)
    points, index = np.unique(head_points(model, np.arange(total)), return_inverse=True)
    due = point_due_cells(model, points)
    blocks = -(-max(int(due[-1]), -(-len(audio) // CELL)) // cells_per_block)
    padded = np.zeros(blocks * block_samples, dtype=np.float32)
    padded[: len(audio)] = audio
    states = [np.asarray(s, dtype=np.float32) for s in initial_state]
    span = states[-1].shape[2]
    curves: list[np.ndarray] = []
    while len(curves) < len(points) and due[len(curves)] == 0:
        curves.append(np.asarray(head(states[-1]), dtype=np.float32).reshape(-1))
    for b in range(blocks):
        *states, history = encoder_step(padded[None, b * block_samples : (b + 1) * block_samples], states)
        c0 = b * cells_per_block
        while len(curves) < len(points) and due[len(curves)] <= c0 + cells_per_block:
            j = int(due[len(curves)]) - c0
            curves.append(np.asarray(head(history[:, :, j : j + span]), dtype=np.float32).reshape(-1))
    return np.stack(curves)[index.reshape(total, -1)].mean(axis=1)


def torch_step_functions(
    step: StreamingStep, head: StreamingHead
) -> tuple[Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]], Callable[[np.ndarray], np.ndarray]]:
    """``run_stream`` callables for the PyTorch modules (also used to record int8 calibration inputs)."""

    @torch.no_grad()
    def encoder_step(block: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        out = step(torch.from_numpy(block), *(torch.from_numpy(s) for s in states))
        return [t.numpy() for t in out]

    @torch.no_grad()
    def head_fn(buffer: np.ndarray) -> np.ndarray:
        return head(torch.from_numpy(np.ascontiguousarray(buffer))).numpy()

    return encoder_step, head_fn


def _conv_macs(module: nn.Module, run: Callable[[], Any]) -> int:
    """Sum over Conv1d calls during ``run()`` of out_positions * C_out * C_in/groups * kernel."""
    total = 0

    def hook(conv: nn.Conv1d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += (
            out.shape[0]
            * out.shape[-1]
            * conv.out_channels
            * (conv.in_channels // conv.groups)
            * conv.kernel_size[0]
        )

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv1d)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def windowed_macs_per_frame(model: Student) -> int:
    """Conv MACs of one windowed forward pass (the exported one-window model), from the layer shapes."""
    return _conv_macs(model, lambda: model(torch.zeros(1, model.window_samples)))


def streaming_macs_per_frame(model: Student) -> float:
    """Conv MACs per output frame when streaming: (cells per frame) x one-cell step + (head runs per frame) x head.

    A ``B``-cell step call costs exactly ``B`` one-cell steps, so this holds for any block size."""
    step, head = StreamingStep(model), StreamingHead(model)
    states = step.initial_state()
    step_macs = _conv_macs(step, lambda: step(torch.zeros(1, CELL), *states))
    head_macs = _conv_macs(head, lambda: head(states[-1]))
    cells_per_frame = SAMPLE_RATE / model.config.fps / CELL
    return cells_per_frame * step_macs + head_runs_per_frame(model) * head_macs
