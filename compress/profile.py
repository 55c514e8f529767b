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
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.card import card_path
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
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = threads
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            self._sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
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
