"""Measure a shipped binary (.onnx or .tflite) the way a device budget sees it.

``profile_binary`` reports, for one binary and the model card beside it (``name.int8.onnx.card.json``):

- ``bytes`` (the file) and ``weight_bytes`` (ONNX initializers and Constant nodes; TFLite constant buffers);
- ``peak_activation_bytes``: the largest sum of live intermediate tensors over the graph's execution order,
  each tensor live from the op that produces it to its last consumer (graph inputs live until their last use,
  weights and anything computed from weights alone excluded). It is measured on the graph as stored, before a
  runtime fuses ops, so it is an upper bound of what a planner that reuses buffers needs;
- ``runtime_rss_bytes``: resident memory growth of a fresh Python process (``VmRSS`` from /proc/self/status),
  read after importing the runtime and before creating the session/interpreter, and again after loading the
  binary and running it 20 times; it includes the runtime's own arena and kernels, not just the model;
- ``lookahead_ms``: re-verified on the binary itself. For a window model whose anchor sits at input index
  ``past`` (card ``input.past_ms``), the tail ``[j, window)`` is perturbed with random noise for several random
  inputs; a bisection finds the last input sample ``m`` whose change alters the output bit-exactly, and
  ``lookahead_ms = (m + 1 - past) / 16``. The card's value is kept beside it and a mismatch is flagged;
- ``macs_per_frame``: multiply-accumulates counted from the graph (Conv, ConvTranspose, MatMul, Gemm and their
  quantized forms; TFLite CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL), divided by the
  frames one call produces;
- ``latency_ms`` median and p99 of one call on one thread (onnxruntime with intra/inter-op threads = 1, or the
  LiteRT Interpreter with ``num_threads=1``) divided by frames per call, and ``real_time_factor`` = frame period /
  median latency (seconds of audio a single core animates per second of compute).

A streaming pair (``name.stream.<dtype>.step.<fmt>`` + ``.head.<fmt>``, one card
``name.stream.<dtype>.<fmt>.card.json``) is one model: ``profile_streaming`` gives it the same columns, measured
through the card's host loop (see there).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.card import card_path, ort_session
from teacher.constants import SAMPLE_RATE
from teacher.errors import FacedistillError

PROFILE_VERSION = 1
RSS_WARM_RUNS = 20


class ProfileError(FacedistillError):
    """A binary that cannot be profiled (unknown format, unreadable, or inconsistent with its card)."""


@dataclass(frozen=True)
class ProfileConfig:
    """How hard to measure: timed runs after warm-up, threads, and inputs used for the lookahead check."""

    runs: int = 1000
    warmup: int = 50
    threads: int = 1
    lookahead_trials: int = 8
    measure_rss: bool = True
    seed: int = 0
    version: int = PROFILE_VERSION

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.threads < 1 or self.lookahead_trials < 1:
            msg = f"ProfileConfig: runs, threads, lookahead_trials must be >= 1 and warmup >= 0, got {self}"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileConfig:
        return cls(**d)


def load_card(binary: str | os.PathLike) -> dict[str, Any] | None:
    """The model card beside a binary (``compress.card.card_path``), or None when there is none."""
    path = card_path(binary)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        msg = f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
        raise ProfileError(msg) from exc


# ---------------------------------------------------------------------------------------------------------------
# Tensor lifetimes, shared by both formats


def peak_live_bytes(
    ops: Sequence[tuple[Sequence[str], Sequence[str]]],
    tensor_bytes: dict[str, int],
    graph_inputs: Sequence[str],
    graph_outputs: Sequence[str],
) -> int:
    """Peak over execution steps of the bytes of live activation tensors.

    ``ops`` is the execution order as (input names, output names); ``tensor_bytes`` holds every activation tensor
    (weights are simply absent, so they are never counted). A graph input is live from the start until its last
    consumer; an op's outputs become live at that op and die after their last consumer (graph outputs live to the
    end). At each op its inputs and outputs are live together.
    """
    last_use: dict[str, int] = {}
    for step, (inputs, _) in enumerate(ops):
        for name in inputs:
            if name in tensor_bytes:
                last_use[name] = step
    end = len(ops)
    for name in graph_outputs:
        last_use[name] = end
    live: dict[str, int] = {n: tensor_bytes[n] for n in graph_inputs if n in tensor_bytes}
    peak = sum(live.values())
    for step, (_, outputs) in enumerate(ops):
        for name in outputs:
            if name in tensor_bytes:
                live[name] = tensor_bytes[name]
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if last_use.get(name, -1) <= step:
                del live[name]
    return peak


# ---------------------------------------------------------------------------------------------------------------
# Graph views: one small structure per format


@dataclass
class _Graph:
    ops: list[tuple[str, list[str], list[str]]]  # (op type, inputs, outputs) in execution order
    shapes: dict[str, tuple[int, ...]]
    itemsize: dict[str, int]
    constants: set[str]  # weights and tensors computed from weights alone
    inputs: list[str]
    outputs: list[str]
    weight_bytes: int
    attrs: list[dict[str, Any]]

    def nbytes(self, name: str) -> int | None:
        if name not in self.shapes or name not in self.itemsize:
            return None
        return int(np.prod(self.shapes[name], dtype=np.int64)) * self.itemsize[name]


def _fixed_onnx_model(path: Path, input_shapes: dict[str, tuple[int, ...]]):
    import onnx

    model = onnx.load(str(path))
    for inp in model.graph.input:
        shape = input_shapes.get(inp.name)
        if shape is None:
            continue
        dims = inp.type.tensor_type.shape.dim
        for dim, value in zip(dims, shape):
            dim.ClearField("dim_param")
            dim.dim_value = int(value)
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _onnx_graph(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> _Graph:
    from onnx import helper, numpy_helper

    model = _fixed_onnx_model(path, input_shapes)
    g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    itemsize: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape") or any(not d.HasField("dim_value") for d in tt.shape.dim):
            continue
        shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        itemsize[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
    constants = {init.name for init in g.initializer}
    weight_bytes = sum(numpy_helper.to_array(init).nbytes for init in g.initializer)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    ops, attrs = [], []
    for node in g.node:
        inputs = [n for n in node.input if n]
        if node.op_type == "Constant":
            value = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].type == 4 else None
            weight_bytes += value.nbytes if value is not None else 0
        if all(n in constants for n in inputs):  # Constant nodes and anything folded from weights alone
            constants.update(node.output)
        ops.append((node.op_type, inputs, list(node.output)))
        attrs.append({a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph_inputs = [i.name for i in g.input if i.name not in constants]
    return _Graph(
        ops, shapes, itemsize, constants, graph_inputs, [o.name for o in g.output], weight_bytes, attrs
    )


def _tflite_graph(path: Path) -> _Graph:
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() != 1:
        msg = f"{path}: {model.SubgraphsLength()} subgraphs; only single-subgraph models are profiled"
        raise ProfileError(msg)
    sg = model.Subgraphs(0)
    code_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_size = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    shapes, itemsize, constants = {}, {}, set()
    weight_bytes, seen_buffers = 0, set()
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        name = str(i)
        shapes[name] = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        itemsize[name] = _TFLITE_ITEMSIZE.get(type_size.get(t.Type(), ""), 4)
        b = model.Buffers(t.Buffer())
        size = max(b.DataLength(), b.Size() if b.Offset() > 1 else 0)
        if size:
            constants.add(name)
            if t.Buffer() not in seen_buffers:
                seen_buffers.add(t.Buffer())
                weight_bytes += size
    ops, attrs = [], []
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        opcode = model.OperatorCodes(op.OpcodeIndex())
        code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
        inputs = [str(i) for i in op.InputsAsNumpy() if i >= 0] if op.InputsLength() else []
        outputs = [str(i) for i in op.OutputsAsNumpy() if i >= 0] if op.OutputsLength() else []
        if inputs and all(n in constants for n in inputs):
            constants.update(outputs)
        ops.append((code_names.get(code, f"CODE_{code}"), inputs, outputs))
        attrs.append({})
    graph_inputs = [str(i) for i in sg.InputsAsNumpy()]
    graph_outputs = [str(i) for i in sg.OutputsAsNumpy()]
    return _Graph(ops, shapes, itemsize, constants, graph_inputs, graph_outputs, weight_bytes, attrs)


_TFLITE_ITEMSIZE = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2, "INT8": 1,
    "FLOAT64": 8, "UINT32": 4, "UINT16": 2, "INT4": 1,
}  # fmt: skip


def graph_peak_activation_bytes(graph: _Graph) -> int:
    sizes = {}
    for name in set(graph.shapes) - graph.constants:
        nb = graph.nbytes(name)
        if nb is not None:
            sizes[name] = nb
    return peak_live_bytes([(i, o) for _, i, o in graph.ops], sizes, graph.inputs, graph.outputs)


def graph_macs(graph: _Graph) -> int:
    """Multiply-accumulates of one call, from tensor shapes (ops without weights-like products count zero)."""
    total = 0

    def numel(name: str) -> int:
        return int(np.prod(graph.shapes.get(name, (0,)), dtype=np.int64))

    for (op, inputs, outputs), attrs in zip(graph.ops, graph.attrs):
        if not outputs or outputs[0] not in graph.shapes:
            continue
        out = numel(outputs[0])
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = graph.shapes.get(inputs[3] if op == "QLinearConv" else inputs[1])
            if w:  # [C_out, C_in / group, *kernel]
                total += out * int(np.prod(w[1:], dtype=np.int64))
        elif op == "ConvTranspose":
            w = graph.shapes.get(inputs[1])  # [C_in, C_out / group, *kernel]
            if w:
                total += numel(inputs[0]) * int(np.prod(w[1:], dtype=np.int64))
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a = graph.shapes.get(inputs[0])
            if a:
                k = a[0] if op == "Gemm" and attrs.get("transA", 0) else a[-1]
                total += out * int(k)
        elif op == "CONV_2D":
            w = graph.shapes.get(inputs[1])  # [C_out, kh, kw, C_in]
            if w:
                total += out * int(np.prod(w[1:], dtype=np.int64))
        elif op == "DEPTHWISE_CONV_2D":
            w = graph.shapes.get(inputs[1])  # [1, kh, kw, C_out]
            if w:
                total += out * int(w[1] * w[2])
        elif op == "TRANSPOSE_CONV":
            w = graph.shapes.get(inputs[1])  # [C_out, kh, kw, C_in]; inputs[2] is the data
            if w:
                total += numel(inputs[2]) * int(w[0] * w[1] * w[2])
        elif op in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            a = graph.shapes.get(inputs[0])
            if a:
                total += out * int(a[-1])
    return total


# ---------------------------------------------------------------------------------------------------------------
# Runners: one call of the binary on numpy inputs


class _Runner:
    """A loaded binary on ``threads`` threads: input specs and ``run(feeds) -> list of outputs``."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.format = path.suffix.lstrip(".").lower()
        if self.format == "onnx":
            self._sess = ort_session(path, threads=threads)  # the exact int8 path the parity gate measured
            self.inputs = [
                (i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape), _ORT_DTYPES[i.type], None)
                for i in self._sess.get_inputs()
            ]
            self.output_shapes = [
                tuple(d if isinstance(d, int) else -1 for d in o.shape) for o in self._sess.get_outputs()
            ]
        elif self.format == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._it = Interpreter(model_path=str(path), num_threads=threads)
            self._it.allocate_tensors()
            det = self._it.get_input_details()
            self.inputs = [
                (str(d["index"]), tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]), d["quantization"])
                for d in det
            ]
            self._out = [d["index"] for d in self._it.get_output_details()]
            self.output_shapes = [tuple(int(x) for x in d["shape"]) for d in self._it.get_output_details()]
        else:
            msg = f"{path}: unknown binary format {path.suffix!r}; expected .onnx or .tflite"
            raise ProfileError(msg)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.format == "onnx":
            return self._sess.run(None, feeds)
        for name, value in feeds.items():
            self._it.set_tensor(int(name), value)
        self._it.invoke()
        return [self._it.get_tensor(i).copy() for i in self._out]


_ORT_DTYPES = {
    "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64), "tensor(int8)": np.dtype(np.int8), "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int32)": np.dtype(np.int32), "tensor(int64)": np.dtype(np.int64), "tensor(int16)": np.dtype(np.int16),
}  # fmt: skip


def _concrete_shape(shape: tuple[int, ...], window: int | None, path: Path, name: str) -> tuple[int, ...]:
    """Fill dynamic dims: the last one with the card's window, any other with 1 (batch)."""
    dims = list(shape)
    for k, d in enumerate(dims):
        if d < 0:
            if k == len(dims) - 1 and window is None:
                msg = f"{path}: input {name!r} has a dynamic time axis and no card gives input.window_samples"
                raise ProfileError(msg)
            dims[k] = window if k == len(dims) - 1 else 1
    return tuple(dims)


def _to_input(x: np.ndarray, dtype: np.dtype, quant: tuple[float, int] | None) -> np.ndarray:
    """Float audio to the binary's input dtype (quantized with its scale/zero point for integer inputs)."""
    if np.issubdtype(dtype, np.integer):
        scale, zero = quant if quant and quant[0] else (1.0 / 127, 0)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _random_feeds(runner: _Runner, shapes: list[tuple[int, ...]], rng: np.random.Generator) -> dict:
    return {
        name: _to_input(rng.uniform(-0.5, 0.5, size=shape), dtype, quant)
        for (name, _, dtype, quant), shape in zip(runner.inputs, shapes)
    }


# ---------------------------------------------------------------------------------------------------------------
# Lookahead


def verify_window_lookahead(
    runner: _Runner, shapes: list[tuple[int, ...]], past_samples: int, *, trials: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Last and first input samples that the output depends on, by perturbing tails and heads of the window.

    The audio input is the runner's first input, time on its last axis. ``changes(j)`` perturbs ``[j, W)`` for
    ``trials`` random windows (noise at several scales, so units that are dead for one input are alive for another)
    and compares outputs bit-exactly; it is monotone in ``j``, so a bisection finds the last dependent sample ``m``
    in ~log2(W) calls per trial. Heads ``[0, j)`` give the first dependent sample. A dependence that no trial
    exercises (e.g. a ReLU dead on every input tried) is missed, so the result is a lower bound in principle.
    """
    rng = np.random.default_rng(seed)
    name, _, dtype, quant = runner.inputs[0]
    width = shapes[0][-1]
    bases = [_random_feeds(runner, shapes, rng) for _ in range(trials)]
    noise = [rng.uniform(-1.0, 1.0, size=shapes[0]) * 0.5 ** (k % 4) for k in range(trials)]  # several scales
    refs = [runner.run(f) for f in bases]

    def changes(lo: int, hi: int) -> bool:
        for feeds, nz, ref in zip(bases, noise, refs):
            x = feeds[name].copy()
            x[..., lo:hi] = _to_input(nz[..., lo:hi], dtype, quant)
            if x[..., lo:hi].tobytes() == feeds[name][..., lo:hi].tobytes():
                continue
            out = runner.run({**feeds, name: x})
            if any(a.tobytes() != b.tobytes() for a, b in zip(out, ref)):
                return True
        return False

    if not changes(0, width):
        return {"last_dependent_sample": None, "first_dependent_sample": None}
    lo, hi = 0, width - 1  # largest j with changes(j, width): invariant changes(lo, width)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if changes(mid, width) else (lo, mid - 1)
    last = lo
    lo, hi = 1, width  # smallest j with changes(0, j)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if changes(0, mid) else (mid + 1, hi)
    first = lo - 1
    lookahead_samples = last + 1 - past_samples
    return {
        "last_dependent_sample": int(last),
        "first_dependent_sample": int(first),
        "lookahead_ms": 1000.0 * lookahead_samples / SAMPLE_RATE,
        "receptive_past_ms": 1000.0 * (past_samples - first) / SAMPLE_RATE,
    }


# ---------------------------------------------------------------------------------------------------------------
# Latency and resident memory


def measure_latency(
    runner: _Runner, feeds: dict[str, np.ndarray], *, runs: int, warmup: int
) -> dict[str, float]:
    """Median and p99 wall time of one call in milliseconds (time.perf_counter_ns around each call)."""
    for _ in range(warmup):
        runner.run(feeds)
    times = np.empty(runs, dtype=np.float64)
    for k in range(runs):
        t0 = time.perf_counter_ns()
        runner.run(feeds)
        times[k] = time.perf_counter_ns() - t0
    return {"median": float(np.median(times) / 1e6), "p99": float(np.percentile(times, 99) / 1e6)}


def _vm_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    msg = "/proc/self/status: no VmRSS line (runtime memory is measured on Linux only)"
    raise ProfileError(msg)


def _rss_child(path: str, threads: int, window: int | None) -> None:
    """Run in a fresh process: print the VmRSS growth from before loading to after loading + 20 runs."""
    p = Path(path)
    if p.suffix == ".onnx":
        import onnxruntime  # noqa: F401  (the import is the runtime, not the model: keep it out of the delta)
    else:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    before = _vm_rss_bytes()
    runner = _Runner(p, threads)
    shapes = [_concrete_shape(s, window, p, n) for n, s, _, _ in runner.inputs]
    feeds = _random_feeds(runner, shapes, np.random.default_rng(0))
    for _ in range(RSS_WARM_RUNS):
        runner.run(feeds)
    print(json.dumps({"rss_before": before, "rss_after": _vm_rss_bytes()}))


def measure_runtime_rss(path: Path, threads: int, window: int | None) -> int:
    """Resident memory growth (bytes) of a fresh subprocess from before the session to after 20 runs."""
    code = f"from compress.profile import _rss_child; _rss_child({str(path)!r}, {threads}, {window!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        msg = f"{path}: memory probe failed: {tail[0]}"
        raise ProfileError(msg)
    line = proc.stdout.strip().splitlines()[-1]
    d = json.loads(line)
    return int(d["rss_after"] - d["rss_before"])


# ---------------------------------------------------------------------------------------------------------------


def profile_binary(
    path: str | os.PathLike, *, card: dict[str, Any] | None = None, config: ProfileConfig = ProfileConfig()
) -> dict[str, Any]:
    """Profile one .onnx/.tflite binary; ``card`` defaults to ``<binary>.card.json`` beside it (may be absent).

    Returns a JSON-ready dict (see the module docstring for each measure and how it is taken). A member of a
    streaming pair, or a streaming card, is profiled as the whole pair by ``profile_streaming``.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such binary"
        raise ProfileError(msg)
    pair = streaming_card_path(path)
    if pair is not None:
        return profile_streaming(pair, config=config)
    if card is None:
        card = load_card(path) or {}
    inp = card.get("input", {})
    window = inp.get("window_samples")
    fps = card.get("output", {}).get("fps")
    runner = _Runner(path, config.threads)
    shapes = [_concrete_shape(s, window, path, n) for n, s, _, _ in runner.inputs]
    if runner.format == "onnx":
        graph = _onnx_graph(path, {n: s for (n, *_), s in zip(runner.inputs, shapes)})
    else:
        graph = _tflite_graph(path)

    rng = np.random.default_rng(config.seed)
    feeds = _random_feeds(runner, shapes, rng)
    outputs = runner.run(feeds)
    n_channels = len(card.get("output", {}).get("channel_names", [])) or outputs[0].shape[-1]
    frames_per_call = max(1, outputs[0].size // n_channels)

    result: dict[str, Any] = {
        "binary": str(path),
        "format": runner.format,
        "bytes": path.stat().st_size,
        "weight_bytes": int(graph.weight_bytes),
        "params": card.get("params"),
        "dtype": card.get("dtype"),
        "streaming": False,
        "input_shapes": [list(s) for s in shapes],
        "frames_per_call": frames_per_call,
        "peak_activation_bytes": int(graph_peak_activation_bytes(graph)),
        "macs_per_frame": int(math.ceil(graph_macs(graph) / frames_per_call)),
        "lookahead_ms_card": card.get("lookahead_ms"),
    }

    past_ms = inp.get("past_ms")
    if past_ms is None:
        result["lookahead_ms"] = None
        result["lookahead_verified"] = False
        result["lookahead_note"] = "no card input.past_ms: the anchor position is unknown"
    else:
        if window is not None and shapes[0][-1] != window:
            msg = f"{path}: input window is {shapes[0][-1]} samples but the card says {window}"
            raise ProfileError(msg)
        past = int(inp.get("past_samples", round(past_ms * SAMPLE_RATE / 1000)))
        found = verify_window_lookahead(
            runner, shapes, past, trials=config.lookahead_trials, seed=config.seed
        )
        result["lookahead_ms"] = found.get("lookahead_ms")
        result["receptive_past_ms"] = found.get("receptive_past_ms")
        result["lookahead_verified"] = found["last_dependent_sample"] is not None
        if not result["lookahead_verified"]:
            result["lookahead_note"] = "the output does not depend on the input at all"
    card_la = result["lookahead_ms_card"]
    result["lookahead_mismatch"] = bool(
        result["lookahead_verified"] and card_la is not None and abs(result["lookahead_ms"] - card_la) > 1e-6
    )

    per_call = measure_latency(runner, feeds, runs=config.runs, warmup=config.warmup)
    result["latency_ms"] = {k: v / frames_per_call for k, v in per_call.items()}
    result["real_time_factor"] = (1000.0 / fps) / result["latency_ms"]["median"] if fps else None
    result["threads"] = config.threads
    result["runtime_rss_bytes"] = (
        measure_runtime_rss(path, config.threads, window) if config.measure_rss else None
    )
    test = card.get("test") or card.get("metrics", {}).get("test")
    if test:
        result["test"] = test
    result["config"] = config.to_dict()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Streaming pairs: name.stream.<dtype>.step.<fmt> + name.stream.<dtype>.head.<fmt>, one card
# name.stream.<dtype>.<fmt>.card.json (compress.stream_export)

STREAM_GRAPHS = ("step", "head")


def streaming_card_path(path: str | os.PathLike) -> Path | None:
    """The card of the streaming pair ``path`` belongs to (either graph, or the card itself), else None."""
    path = Path(path)
    if path.name.endswith(".card.json"):
        candidate = path
    else:
        parts = path.name.rsplit(".", 2)  # name.stream.int8 | step | onnx
        if len(parts) != 3 or parts[1] not in STREAM_GRAPHS:
            return None
        candidate = card_path(path.with_name(f"{parts[0]}.{parts[2]}"))
    if not candidate.is_file():
        return None
    card = load_card(candidate.with_name(candidate.name[: -len(".card.json")]))
    return candidate if card and card.get("kind") == "streaming" else None


def pair_name(card_file: Path) -> Path:
    """The name a streaming pair is reported under: its card without ``.card.json`` (``name.stream.int8.onnx``)."""
    return card_file.with_name(card_file.name[: -len(".card.json")])


def stream_schedule(card: dict[str, Any], n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the card alone: sorted unique head points, ``[F, P]`` index of each frame's points, cells due per point.

    Head point ``p`` runs once ``(p + head_future_samples) // cell_samples`` cells are in (64-sample cells, not
    blocks); a frame is complete when its last point has run (the card's ``schedule.rule``).
    """
    sched, cell, rate = card["schedule"], int(card["cell_samples"]), int(card["sample_rate"])
    fps = int(sched["fps"])
    k = np.arange(n_frames, dtype=np.int64)
    anchors = np.asarray(sched["anchors_first_second"], dtype=np.int64)[k % fps] + rate * (k // fps)
    offsets = np.asarray(sched["head_points_offsets"], dtype=np.int64)
    points, index = np.unique(anchors[:, None] + offsets[None, :], return_inverse=True)
    due = (points + int(sched["head_future_samples"])) // cell
    return points, index.reshape(n_frames, len(offsets)), due


def head_runs_per_frame_of(card: dict[str, Any]) -> float:
    """Head calls per frame in steady state: new unique points over one second of frames (shared points once)."""
    fps = int(card["schedule"]["fps"])
    return (len(stream_schedule(card, fps + 1)[0]) - len(stream_schedule(card, 1)[0])) / fps


def initial_states(card: dict[str, Any]) -> list[np.ndarray]:
    """Each state tensor at stream start, from the card's per-channel initial values (float32 ``[1, C, T]``)."""
    return [
        np.tile(np.asarray(s["initial_value_per_channel"], np.float32)[:, None], (1, s["shape"][-1]))[None]
        for s in card["state"]
    ]


def stream_frames(
    step: Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]],
    head: Callable[[np.ndarray], np.ndarray],
    card: dict[str, Any],
    audio: np.ndarray,
    n_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The card's host loop over ``audio`` (zero-padded): frames ``[n_frames, C]`` and each frame's wall time (ns).

    Heads due at cell count 0 run on the initial head buffer; then per block of ``B`` cells: step the block, then in
    due order run each head point due inside it on its slice of the step's history output, marking each frame
    complete as soon as its last point has run. Frame ``k``'s time runs from frame ``k - 1``'s completion to its
    own: the step calls in between and the head calls falling due there, plus the host's own slicing and (for int8
    TFLite) input quantization. With ``B`` near the cells per frame most frames carry one step call; a block that
    completes two frames charges the second only its head calls.
    """
    block, per_block = int(card["block_samples"]), int(card["block_cells"])
    points, index, due = stream_schedule(card, n_frames)
    last_point = index.max(axis=1)  # points run in sorted order: a frame is complete once its last one has
    blocks = -(-int(due[-1]) // per_block)
    padded = np.zeros(blocks * block, dtype=np.float32)
    padded[: min(len(audio), len(padded))] = audio[: len(padded)]
    states = initial_states(card)
    span = states[-1].shape[2]
    curves: list[np.ndarray] = []
    times = np.zeros(n_frames, dtype=np.int64)
    frame, t_prev = 0, time.perf_counter_ns()

    def run_due(upto: int, buffer_at: Callable[[int], np.ndarray]) -> None:
        nonlocal frame, t_prev
        while len(curves) < len(points) and due[len(curves)] <= upto:
            curves.append(np.asarray(head(buffer_at(int(due[len(curves)]))), dtype=np.float32).reshape(-1))
            while frame < n_frames and last_point[frame] < len(curves):  # all of the frame's points have run
                now = time.perf_counter_ns()
                times[frame], t_prev, frame = now - t_prev, now, frame + 1

    run_due(0, lambda _d: states[-1])
    for b in range(blocks):
        *states, history = step(padded[None, b * block : (b + 1) * block], states)
        c0 = b * per_block
        run_due(c0 + per_block, lambda d, c0=c0, history=history: history[:, :, d - c0 : d - c0 + span])
    return np.stack(curves)[index].mean(axis=1), times


def _pair_functions(card_file: Path, card: dict[str, Any]):
    from compress.stream_export import binary_step_functions

    paths = {g: card_file.parent / card["graphs"][g]["file"] for g in STREAM_GRAPHS}
    for g, p in paths.items():
        if not p.is_file():
            msg = f"{card_file}: the {g} graph {p.name} is missing"
            raise ProfileError(msg)
    return binary_step_functions(paths["step"], paths["head"], card["graphs"])


def verify_stream_lookahead(
    step: Callable, head: Callable, card: dict[str, Any], *, trials: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Last audio sample one frame of the streamed pair depends on, relative to its anchor, plus the boundary check.

    A frame ``k`` about a quarter second in is streamed from random audio; perturbing ``[j, end)`` with noise (for
    ``trials`` inputs at several scales) either changes frame ``k`` bit-exactly or not, monotonically in ``j``, so a
    bisection finds the last dependent sample ``m`` and ``lookahead = m + 1 - anchor_k``. Then the card's claim is
    checked directly: perturbing everything from ``anchor_k + lookahead_samples`` on leaves the frame bit-identical
    (the host loop runs the frame's heads before feeding those cells, so this checks the card's schedule) and
    perturbing the last cell before that changes it (the graphs really read that far). Like the windowed check this
    is a lower bound: int8 rounding can swallow the effect of the outermost samples on a given input.
    """
    sched, cell = card["schedule"], int(card["cell_samples"])
    k = max(1, int(sched["fps"]) // 4)
    fps, rate = int(sched["fps"]), int(card["sample_rate"])
    anchor = int(sched["anchors_first_second"][k % fps]) + rate * (k // fps)
    claimed = anchor + int(sched["lookahead_samples"])
    length = (int(stream_schedule(card, k + 1)[2][-1]) + 4) * cell
    rng = np.random.default_rng(seed)
    bases = [rng.uniform(-0.5, 0.5, length).astype(np.float32) for _ in range(trials)]
    noise = [(rng.uniform(-1, 1, length) * 0.5 ** (t % 4)).astype(np.float32) for t in range(trials)]
    refs = [stream_frames(step, head, card, a, k + 1)[0][k] for a in bases]

    def changes(lo: int, hi: int) -> bool:
        for audio, nz, ref in zip(bases, noise, refs):
            x = audio.copy()
            x[lo:hi] = nz[lo:hi]
            if stream_frames(step, head, card, x, k + 1)[0][k].tobytes() != ref.tobytes():
                return True
        return False

    if not changes(0, length):
        return {"last_dependent_sample": None, "frame": k}
    lo, hi = 0, length - 1  # largest j with changes(j, length)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if changes(mid, length) else (lo, mid - 1)
    return {
        "frame": k,
        "anchor_sample": anchor,
        "last_dependent_sample": lo,
        "lookahead_ms": 1000.0 * (lo + 1 - anchor) / rate,
        "after_claim_identical": not changes(claimed, length),
        "last_cell_changes": changes(claimed - cell, claimed),
    }


def _rss_stream_child(card_file: str) -> None:
    """Run in a fresh process: VmRSS growth from before loading the pair to after streaming one second."""
    card_path_ = Path(card_file)
    card = json.loads(card_path_.read_text())
    if card["format"] == "onnx":
        import onnxruntime  # noqa: F401  (the runtime itself stays out of the delta)
    else:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    import compress.stream_export  # noqa: F401  (the host code, likewise)

    before = _vm_rss_bytes()
    step, head = _pair_functions(card_path_, card)
    fps = int(card["schedule"]["fps"])
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, int(card["sample_rate"])).astype(np.float32)
    stream_frames(step, head, card, audio, fps)
    print(json.dumps({"rss_before": before, "rss_after": _vm_rss_bytes()}))


def _stream_rss(card_file: Path) -> int:
    code = f"from compress.profile import _rss_stream_child; _rss_stream_child({str(card_file)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        msg = f"{card_file}: memory probe failed: {tail[0]}"
        raise ProfileError(msg)
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(d["rss_after"] - d["rss_before"])


def _state_bytes(card: dict[str, Any]) -> int:
    """Bytes of the state tensors as the step graph takes them (int8 states count one byte per value)."""
    rows = card["graphs"]["step"]["inputs"][1:]
    return sum(int(np.prod(r["shape"], dtype=np.int64)) * np.dtype(r["dtype"]).itemsize for r in rows)


def profile_streaming(
    card_file: str | os.PathLike, *, config: ProfileConfig = ProfileConfig()
) -> dict[str, Any]:
    """Profile a streaming pair (step + head graphs, one card) as one model, with the windowed binary's columns.

    A *frame* here costs what a live host spends per output frame: the step calls for the blocks of ``block_cells``
    64-sample cells between two frame completions (16000 / fps / 64 cells on average, 8.33 at 30 fps, so about one
    8-cell block) plus the head calls falling due among them (``head_runs_per_frame``, shared smoothing points
    once). Measures:

    - ``bytes`` / ``weight_bytes``: step + head files / constants;
    - ``macs_per_frame``: ceil(cells per frame x step-graph MACs / block_cells + head runs per frame x head-graph
      MACs), both counted from the graphs like a windowed binary's;
    - ``peak_activation_bytes``: the state tensors (held between calls) + the larger of the step and head graph
      peaks (each counts its own inputs, so the state is counted twice: an upper bound, like the windowed one);
    - ``runtime_rss_bytes``: resident growth of a fresh process loading both graphs and streaming one second;
    - ``latency_ms``: median / p99 per frame over ``config.runs`` frames (after ``config.warmup`` frames) of the
      card's host loop over random audio, each graph on one thread in the pair's runtime;
      ``real_time_factor`` = frame period / median;
    - ``lookahead_ms``: re-verified on the pair (``verify_stream_lookahead``).
    """
    card_file = Path(card_file)
    if config.threads != 1:
        msg = f"{card_file}: streaming pairs run each graph on one thread; got threads={config.threads}"
        raise ProfileError(msg)
    card = load_card(pair_name(card_file))
    if not card or card.get("kind") != "streaming":
        msg = f"{card_file}: not a streaming card (expected kind 'streaming')"
        raise ProfileError(msg)
    if "history" not in card:
        msg = f"{card_file}: the step graph has no history output (made before block feeding): re-export"
        raise ProfileError(msg)
    fmt = card["format"]
    files = {g: card_file.parent / card["graphs"][g]["file"] for g in STREAM_GRAPHS}
    step, head = _pair_functions(card_file, card)
    graphs = {g: _onnx_graph(p, {}) if fmt == "onnx" else _tflite_graph(p) for g, p in files.items()}
    fps, block, rate = int(card["schedule"]["fps"]), int(card["block_samples"]), int(card["sample_rate"])
    per_block = int(card["block_cells"])
    cells_per_frame = rate / fps / int(card["cell_samples"])
    heads_per_frame = head_runs_per_frame_of(card)
    macs_call = {g: int(graph_macs(graphs[g])) for g in STREAM_GRAPHS}
    peaks = {g: int(graph_peak_activation_bytes(graphs[g])) for g in STREAM_GRAPHS}
    state_bytes = _state_bytes(card)
    result: dict[str, Any] = {
        "binary": str(pair_name(card_file)),
        "files": [str(p) for p in files.values()],
        "format": fmt,
        "bytes": sum(p.stat().st_size for p in files.values()),
        "weight_bytes": sum(int(g.weight_bytes) for g in graphs.values()),
        "params": card.get("params"),
        "dtype": card.get("dtype"),
        "streaming": True,
        "block_samples": block,
        "block_cells": per_block,
        "cells_per_frame": cells_per_frame,
        "step_calls_per_frame": cells_per_frame / per_block,
        "head_runs_per_frame": heads_per_frame,
        "macs_per_call": macs_call,
        "macs_per_frame": int(
            # one step call covers per_block cells: its MACs are per_block x one cell's
            math.ceil(cells_per_frame * (macs_call["step"] / per_block) + heads_per_frame * macs_call["head"])
        ),
        "state_bytes": state_bytes,
        "graph_peak_activation_bytes": peaks,
        "peak_activation_bytes": state_bytes + max(peaks.values()),
        "lookahead_ms_card": card.get("lookahead_ms"),
    }
    found = verify_stream_lookahead(step, head, card, trials=config.lookahead_trials, seed=config.seed)
    result["lookahead_ms"] = found.get("lookahead_ms")
    result["lookahead_check"] = found
    result["lookahead_verified"] = found["last_dependent_sample"] is not None
    if not result["lookahead_verified"]:
        result["lookahead_note"] = "the streamed frame does not depend on the audio at all"
    elif not (found["after_claim_identical"] and found["last_cell_changes"]):
        result["lookahead_note"] = "the pair does not use exactly the card's lookahead (see lookahead_check)"
    card_la = result["lookahead_ms_card"]
    result["lookahead_mismatch"] = bool(
        result["lookahead_verified"] and card_la is not None and abs(result["lookahead_ms"] - card_la) > 1e-6
    )

    n = config.warmup + config.runs + 1  # frame 0 also carries the cells before the first anchor: dropped
    audio = (
        np.random.default_rng(config.seed).uniform(-0.5, 0.5, math.ceil(n * rate / fps)).astype(np.float32)
    )
    times = stream_frames(step, head, card, audio, n)[1][config.warmup + 1 :]
    result["latency_ms"] = {
        "median": float(np.median(times) / 1e6),
        "p99": float(np.percentile(times, 99) / 1e6),
    }
    result["latency_frames"] = len(times)
    result["real_time_factor"] = (1000.0 / fps) / result["latency_ms"]["median"]
    result["threads"] = 1
    result["runtime_rss_bytes"] = _stream_rss(card_file) if config.measure_rss else None
    test = card.get("test") or card.get("quality")
    if test:
        result["test"] = test
    result["config"] = config.to_dict()
    return result
