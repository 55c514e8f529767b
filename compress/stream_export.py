"""Export a streaming student (encoder step + head, state as explicit tensors) to ONNX / TFLite, fp32 / int8 / a16w8.

Two graphs per binary pair, both with fixed shapes:

* ``step``: ``(cells [1, 64 B], state_0 .. state_n) -> (state_0' .. state_n', history)`` -- run once per block of
  ``B`` 64-sample cells (default 8 = 32 ms); the last state is the head buffer (the last ``K`` encoder positions) and
  ``history [1, C_enc, K + B]`` holds the head buffer after every cell of the block;
* ``head``: ``head_buffer -> curves [1, C]`` -- run only at a due head point, on the initial head buffer or a
  ``K``-wide slice of a step's history (see ``students.streaming``).

Per frame that is ``cells_per_frame / B x step + head_runs_per_frame x head`` MACs instead of one whole window. Each
pair is streamed over a held-out utterance in its own runtime (one thread) and compared with the windowed PyTorch
model; quantized graphs must hold int8 weights in every weight layer (``compress.export.check_int8``). A failing pair
never reaches its final names. The card (``name.stream.<dtype>.<format>.card.json``) says everything a runtime needs:
tensor names, state shapes and initial values, block size, and when each frame falls due.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.card import (
    CARD_VERSION,
    card_path,
    input_encoding,
    model_timing,
    ort_session,
    quantization_scheme,
    runtime_settings,
)
from compress.export import (
    QUANTIZED,
    SUFFIX,
    ExportConfig,
    ExportError,
    check_int8,
    check_parity,
    grid_weights,
    int8_weight_only,
    quantize_onnx_qdq,
    quantize_tflite_a16w8,
    tflite_scopes,
)
from compress.quantize import always_float, check_keep_float, float_layers, pt2e_quantizer
from students.data import utterance_windows
from students.model import Student, as_binary
from students.streaming import (
    CELL,
    StreamingHead,
    StreamingStep,
    head_runs_per_frame,
    run_stream,
    streaming_macs_per_frame,
    torch_step_functions,
    windowed_macs_per_frame,
)
from teacher.constants import frame_anchors, num_frames
from teacher.fsutil import atomic_path, atomic_write_json, sha256_file

DEFAULT_CONFIG = ExportConfig(fp32_tolerance=1e-5)  # streaming is exact: fp32 pairs must match to 1e-5
CALIB_STEPS = 256  # recorded (cells, state) inputs used to calibrate the int8 step graph
BLOCK_CELLS = 8  # cells per step call (512 samples = 32 ms): ~1 call per frame at 30 fps, not 8.3
CELLS_INPUT, CURVES_OUTPUT, HISTORY_OUTPUT = "cells", "curves", "history"

DUE_RULE = (
    "Let B = block_cells and K = head_buffer.shape[-1]; a cell is 64 samples and a block is block_samples = 64 * B "
    "samples. Start from the initial state (= an endless run of zeros before the stream) with cell count c = 0 and "
    "feed the step one block at a time; after each call feed every state output back as its input and add B to c. "
    "Head point p (a sample index) is due at cell count d = (p + head_future_samples) // 64. If d == 0, run the head "
    "on the initial head_buffer before feeding any audio. Otherwise run it right after the step call that took the "
    "count from c0 to c0 + B with c0 < d <= c0 + B, on the K positions history[:, :, d - c0 : d - c0 + K] of that "
    "call's history output (history[:, :, j : j + K] is the head buffer after the j-th cell of the block). Frame k "
    "is the mean of the head outputs at its points: anchor_k (+/- smoothing_step_samples when smoothing). "
    "anchor_k = 64 * round_half_even(k * 16000 / (fps * 64)) = anchors_first_second[k % fps] + 16000 * (k // fps). "
    "Frame k is complete once due_cells_k = (anchor_k + lookahead_samples) // 64 cells are in, i.e. after block "
    "ceil(due_cells_k / B) (frame 0 may be complete before any block when due_cells_0 == 0). At the end of a clip of "
    "N samples, feed zero-padded blocks until the last frame (k = ceil(N * fps / 16000) - 1) is complete."
)


def export_streaming(
    model: Student,
    calib_audio: Sequence[np.ndarray],
    heldout_audio: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    name: str,
    config: ExportConfig = DEFAULT_CONFIG,
    parent_sha256: str | None = None,
    extra: dict[str, Any] | None = None,
    block_cells: int = BLOCK_CELLS,
) -> list[Path]:
    """Write ``name.stream.<dtype>.{step,head}.<format>`` (+ one card per pair) into ``out_dir``; returns the cards.

    ``calib_audio`` (utterances of real audio) calibrates int8 ranges: it is streamed through the float model and the
    step / head inputs it produces are recorded. ``heldout_audio`` (one long utterance) is the parity clip: every
    binary pair streams it and must match the windowed PyTorch model within the config's tolerance. The step graph
    takes ``block_cells`` cells (``64 * block_cells`` samples) per call.
    """
    model = model.eval()
    check_keep_float(model, config.keep_float)
    if heldout_audio.ndim != 1 or len(heldout_audio) < CELL or not calib_audio:
        msg = f"{out_dir}: need a 1-D held-out utterance (got shape {heldout_audio.shape}) and calibration audio"
        raise ExportError(msg)
    heldout = np.ascontiguousarray(heldout_audio, dtype=np.float32)
    frames = num_frames(len(heldout), model.config.fps)
    with torch.no_grad():
        anchors = torch.from_numpy(frame_anchors(frames, model.config.fps))
        reference = model.forward_full(torch.from_numpy(heldout)[None], anchors, pad=True)[0].numpy()
    # the graphs take encoded audio (identity for linear students; see students.model.as_binary)
    source, (heldout, *calib_audio) = as_binary(model, heldout, *calib_audio)
    step, head = StreamingStep(source, cells_per_step=block_cells), StreamingHead(source)
    quantized: dict[str, nn.Module] | None = None  # graphs of the int8-grid model (made on first use)
    initial = [s.numpy() for s in step.initial_state()]
    calib_steps, calib_heads = _record_calibration(source, step, head, initial, calib_audio)
    graphs = {
        "step": (step, (torch.from_numpy(calib_steps[0][0]), *map(torch.from_numpy, calib_steps[0][1]))),
        "head": (head, (torch.from_numpy(calib_heads[0]),)),
    }
    calib = {"step": [(c, *s) for c, s in calib_steps], "head": [(h,) for h in calib_heads]}
    names = {"step": _step_names(step), "head": ([step.state_names()[-1]], [CURVES_OUTPUT])}
    out_dir = Path(out_dir)
    cards = []
    keep_all = tuple(dict.fromkeys(always_float(source) + config.keep_float))  # + a log-mel filterbank
    for fmt in config.formats:
        for dtype in config.dtypes:
            stem = f"{name}.stream.{dtype}"
            paths = {g: out_dir / f"{stem}.{g}{SUFFIX[fmt]}" for g in graphs}
            with atomic_path(paths["step"]) as tmp_step, atomic_path(paths["head"]) as tmp_head:
                tmps = {"step": tmp_step, "head": tmp_head}
                io_names = {}
                if dtype in QUANTIZED and quantized is None:
                    rounded = grid_weights(
                        source, _calibration_windows(source, calib_audio), config, keep_all
                    )
                    quantized = {
                        "step": StreamingStep(rounded, cells_per_step=block_cells),
                        "head": StreamingHead(rounded),
                    }
                for g, (module, example) in graphs.items():
                    keep = _keep_float_in(module, keep_all) if dtype in QUANTIZED else ()
                    fixed = _keep_float_in(module, always_float(source)) if dtype in QUANTIZED else ()
                    _write_graph(
                        quantized[g] if dtype in QUANTIZED else module,
                        example,
                        tmps[g],
                        fmt=fmt,
                        dtype=dtype,
                        names=names[g],
                        calib=calib[g],
                        keep_float=keep,
                        fixed=fixed,
                        weight_only=fixed if config.fixed_weights == "int8" else (),
                    )
                    if dtype in QUANTIZED:
                        check_int8(tmps[g], paths[g], keep_float=tuple(float_layers(module, keep)))
                    io_names[g] = binary_io(tmps[g], names[g])
                step_fn, head_fn = binary_step_functions(tmps["step"], tmps["head"], io_names)
                streamed = run_stream(
                    heldout,
                    step_fn,
                    head_fn,
                    initial_state=initial,
                    block_samples=step.block_samples,
                    model=model,
                )
                parity = check_parity(paths["step"], streamed, reference, tolerance=config.tolerance(dtype))
                parity["seconds"] = len(heldout) / model_timing(model)["sample_rate"]
                card = stream_card(
                    model, step, {g: (paths[g].name, tmps[g]) for g in graphs}, io_names, initial,
                    fmt=fmt, dtype=dtype, parity=parity, keep_float=keep_all if dtype in QUANTIZED else (),
                    weight_only=always_float(source) if dtype in QUANTIZED and config.fixed_weights == "int8" else (),
                    parent_sha256=parent_sha256, export_config=config.to_dict(), extra=extra,
                )  # fmt: skip
            path = card_path(out_dir / f"{stem}{SUFFIX[fmt]}")
            atomic_write_json(path, card)
            cards.append(path)
    return cards


def _calibration_windows(model: Student, audio: Sequence[np.ndarray], count: int = 512) -> np.ndarray:
    """``count`` model input windows at frame anchors of the calibration clips (evenly spread): what
    weight rounding sees."""
    fps = model.config.fps
    windows = np.concatenate(
        [
            utterance_windows(
                np.asarray(clip, np.float32), frame_anchors(num_frames(len(clip), fps), fps), model
            )
            for clip in audio
        ]
    )
    return windows[np.unique(np.linspace(0, len(windows) - 1, min(count, len(windows))).astype(int))]


def _step_names(step: StreamingStep) -> tuple[list[str], list[str]]:
    states = step.state_names()
    return [CELLS_INPUT, *states], [*(f"{s}_next" for s in states), HISTORY_OUTPUT]


def _keep_float_in(module: nn.Module, keep_float: tuple[str, ...]) -> tuple[str, ...]:
    """The ``keep_float`` layers that live in this graph (module names are the student's own)."""
    names = {n for n, _ in module.named_modules()}
    return tuple(k for k in keep_float if k in names)


def _record_calibration(
    model: Student,
    step: StreamingStep,
    head: StreamingHead,
    initial: list[np.ndarray],
    audio: Sequence[np.ndarray],
) -> tuple[list[tuple[np.ndarray, list[np.ndarray]]], list[np.ndarray]]:
    """Inputs the step and head graphs see when the float model streams ``audio`` (evenly thinned to CALIB_STEPS)."""
    step_fn, head_fn = torch_step_functions(step, head)
    steps: list[tuple[np.ndarray, list[np.ndarray]]] = []
    heads: list[np.ndarray] = []

    def record_step(block: np.ndarray, states: list[np.ndarray]) -> list[np.ndarray]:
        steps.append((block.copy(), [s.copy() for s in states]))
        return step_fn(block, states)

    def record_head(buffer: np.ndarray) -> np.ndarray:
        heads.append(np.ascontiguousarray(buffer))
        return head_fn(buffer)

    for clip in audio:
        clip = np.asarray(clip, dtype=np.float32)
        run_stream(
            clip,
            record_step,
            record_head,
            initial_state=initial,
            block_samples=step.block_samples,
            model=model,
        )
    keep_steps = np.unique(np.linspace(0, len(steps) - 1, min(CALIB_STEPS, len(steps))).astype(int))
    keep_heads = np.unique(np.linspace(0, len(heads) - 1, min(CALIB_STEPS, len(heads))).astype(int))
    return [steps[i] for i in keep_steps], [heads[i] for i in keep_heads]


def _write_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    *,
    fmt: str,
    dtype: str,
    names: tuple[list[str], list[str]],
    calib: list[tuple[np.ndarray, ...]],
    keep_float: tuple[str, ...],
    fixed: tuple[str, ...] = (),
    weight_only: tuple[str, ...] = (),
) -> None:
    """One graph to ``path``; ``fixed``: its fixed float preprocessing (kept float), ``weight_only``: those of them
    whose weights are stored as int8 (:func:`compress.export.int8_weight_only`)."""
    if fmt == "onnx":
        with _quiet():
            program = torch.onnx.export(
                module, example, input_names=names[0], output_names=names[1], dynamo=True, external_data=False
            )
            program.save(str(path), external_data=False)
        if dtype in QUANTIZED:
            feeds = (dict(zip(names[0], inputs)) for inputs in calib)
            quantize_onnx_qdq(path, feeds, keep_float, dtype=dtype, audio_inputs=(CELLS_INPUT,))
    else:
        _write_tflite_graph(
            module,
            example,
            path,
            dtype=dtype,
            audio=names[0][0] == CELLS_INPUT,
            calib=calib,
            keep_float=keep_float,
            fixed=fixed,
        )
    if dtype in QUANTIZED and weight_only:
        int8_weight_only(path, module, weight_only)


def _write_tflite_graph(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    *,
    dtype: str,
    audio: bool,
    calib: list[tuple[np.ndarray, ...]],
    keep_float: tuple[str, ...],
    fixed: tuple[str, ...],
) -> None:
    """The LiteRT side of :func:`_write_graph`; ``audio``: the graph's first input is audio (the step graph)."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    kwargs: dict[str, Any] = {}
    if dtype == "int8":
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = pt2e_quantizer(keep_float)
        prepared = prepare_pt2e(torch.export.export(module.eval(), example).module(), quantizer)
        with torch.no_grad():
            for inputs in calib:
                prepared(*map(torch.from_numpy, inputs))
        module = _share_concat_qparams(convert_pt2e(prepared, fold_quantize=False))
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with _quiet():
        litert_torch.convert(module, example, **kwargs).export(str(path))
    if dtype == "a16w8":
        quantize_tflite_a16w8(
            path,
            [list(inputs) for inputs in calib],
            keep_float,
            audio_inputs=(0,) if audio else (),
            fixed_scopes=tflite_scopes(module, fixed),
        )


def _share_concat_qparams(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give each state concat's int8 input and output one scale (the widest): the LiteRT converter refuses a concat
    whose quantized operands disagree ("same scale constraint"), which PT2E's separate observers produce."""

    def is_op(node: torch.fx.Node, kind: str) -> bool:
        return node.op == "call_function" and str(node.target).endswith(f".{kind}_per_tensor.default")

    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.cat.default:
            continue
        quants = [a.args[0] for a in node.args[0] if is_op(a, "dequantize")]
        quants += [u for u in node.users if is_op(u, "quantize")]
        if len(quants) < 2:
            continue
        widest = max(quants, key=lambda q: q.args[1])
        for q in quants:
            for n in [q, *(u for u in q.users if is_op(u, "dequantize"))]:
                n.args = (n.args[0], widest.args[1], widest.args[2], *n.args[3:])
    graph.recompile()
    return graph


def binary_io(path: Path, names: tuple[list[str], list[str]]) -> dict[str, list[dict[str, Any]]]:
    """Each graph input/output in call order: our name, the binary's tensor name, shape, dtype, int8 quantization."""
    with open(path, "rb") as fh:
        is_tflite = fh.read(8)[4:8] == b"TFL3"
    if not is_tflite:
        import onnx

        graph = onnx.load(str(path)).graph
        rows = {}
        for role, tensors in (("inputs", graph.input), ("outputs", graph.output)):
            rows[role] = [
                {
                    "name": t.name,
                    "tensor": t.name,
                    "shape": [d.dim_value for d in t.type.tensor_type.shape.dim],
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.type.tensor_type.elem_type).name,
                    "quantization": None,
                }
                for t in tensors
            ]
        return rows
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    rows = {}
    for role, details, ours in (
        ("inputs", runner.get_input_details(), names[0]),
        ("outputs", runner.get_output_details(), names[1]),
    ):
        keys = sorted(details, key=lambda k: int(k.rsplit("_", 1)[1]))  # args_0.., output_0.. = call order
        rows[role] = []
        for our, key in zip(ours, keys):
            d = details[key]
            scale, zero = d["quantization"]
            quant = None if d["dtype"] == np.float32 else {"scale": float(scale), "zero_point": int(zero)}
            rows[role].append(
                {"name": our, "tensor": key, "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "quantization": quant}
            )  # fmt: skip
    return rows


def binary_step_functions(
    step_path: Path, head_path: Path, io_names: dict[str, dict[str, list[dict[str, Any]]]]
) -> tuple[Callable[[np.ndarray, list[np.ndarray]], list[np.ndarray]], Callable[[np.ndarray], np.ndarray]]:
    """``run_stream`` callables for an exported pair, run one call at a time on one thread as an engine would."""
    fns = [binary_function(path, io_names[g]) for g, path in (("step", step_path), ("head", head_path))]
    step_fn, head_fn = fns
    return (lambda block, states: step_fn([block, *states])), (lambda buffer: head_fn([buffer])[0])


def binary_function(
    path: Path, io: dict[str, list[dict[str, Any]]]
) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    ins, outs = io["inputs"], io["outputs"]
    with open(path, "rb") as fh:
        is_tflite = fh.read(8)[4:8] == b"TFL3"
    if not is_tflite:
        session = ort_session(path)
        out_names = [o["tensor"] for o in outs]
        return lambda arrays: session.run(
            out_names, {i["tensor"]: np.ascontiguousarray(a) for i, a in zip(ins, arrays)}
        )
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()

    def call(arrays: list[np.ndarray]) -> list[np.ndarray]:
        result = runner(**{i["tensor"]: _quantize(a, i) for i, a in zip(ins, arrays)})
        return [_dequantize(result[o["tensor"]], o) for o in outs]

    return call


def _quantize(x: np.ndarray, row: dict[str, Any]) -> np.ndarray:
    q = row["quantization"]
    if q is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    info = np.iinfo(row["dtype"])
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(row["dtype"])


def _dequantize(y: np.ndarray, row: dict[str, Any]) -> np.ndarray:
    q = row["quantization"]
    if q is None:
        return y
    return ((y.astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)


def stream_card(
    model: Student,
    step: StreamingStep,
    binaries: dict[str, tuple[str, Path]],
    io_names: dict[str, dict[str, list[dict[str, Any]]]],
    initial: list[np.ndarray],
    *,
    fmt: str,
    dtype: str,
    parity: dict[str, Any],
    keep_float: tuple[str, ...],
    parent_sha256: str | None,
    export_config: dict[str, Any],
    weight_only: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a checked streaming pair (``binaries`` maps graph -> (final file name, current path))."""
    timing = model_timing(model)
    step_io = io_names["step"]
    states = []
    for i, (our, shape) in enumerate(zip(step.state_names(), step.state_shapes())):
        states.append(
            {
                "name": our,
                "input": step_io["inputs"][i + 1]["tensor"],
                "output": step_io["outputs"][i]["tensor"],
                "shape": list(shape),
                "initial_value_per_channel": [float(v) for v in initial[i][0, :, 0]],
            }
        )
    smoothing = int(model.config.smoothing_step)
    encoding = input_encoding(model)
    return {
        "card_version": CARD_VERSION,
        "kind": "streaming",
        "format": fmt,
        "dtype": dtype,
        "params": sum(p.numel() for p in model.parameters()),
        "graphs": {
            g: {"file": file, "file_bytes": os.path.getsize(path), "sha256": sha256_file(path), **io_names[g]}
            for g, (file, path) in binaries.items()
        },
        "state": states,
        "state_rule": "initial state of each: np.tile(initial_value_per_channel, shape[-1]) laid out as shape "
        "[1, C, T]; after every step call, feed each state output back as the matching input (the history output "
        "is not fed back)",
        "block_samples": step.block_samples,
        "block_cells": step.cells_per_step,
        "cell_samples": CELL,
        "history": {
            "output": step_io["outputs"][-1]["tensor"],
            "shape": list(step.history_shape()),
            "meaning": "the head buffer before the block followed by the block's B new encoder positions: "
            "history[:, :, j : j + K] is the head buffer after the j-th cell of the block (j = 1..B)",
        },
        "sample_rate": timing["sample_rate"],
        "input_meaning": f"cells: mono PCM in [-1, 1], the next {step.block_samples} samples "
        f"({step.cells_per_step} cells of {CELL}) of the stream"
        + ("" if encoding["type"] == "linear" else ", mu-law companded as input_encoding says"),
        "input_encoding": encoding,
        "output": {"name": CURVES_OUTPUT, "channel_names": timing["channel_names"], "range": [0.0, 1.0]},
        "schedule": {
            "fps": timing["fps"],
            "anchors_first_second": [int(a) for a in frame_anchors(timing["fps"], timing["fps"])],
            "head_future_samples": int(model.config.future_samples),
            "smoothing_step_samples": smoothing,
            "head_points_offsets": [-smoothing, 0, smoothing] if smoothing else [0],
            "lookahead_samples": int(model.lookahead_samples),
            "rule": DUE_RULE,
        },
        "lookahead_ms": timing["lookahead_ms"],
        "macs_per_frame": {
            "streaming": float(streaming_macs_per_frame(model)),
            "windowed": int(windowed_macs_per_frame(model)),
            "head_runs_per_frame": head_runs_per_frame(model),
        },
        "runtime": runtime_settings(fmt),
        "quantization": {
            "scheme": quantization_scheme(fmt, dtype).replace("real audio windows", "streamed audio"),
            "keep_float": list(keep_float),
            "weight_only_int8": list(weight_only),
        },
        "parity": {
            **parity,
            "reference": "windowed PyTorch model (forward_full, pad=True) over the held-out clip",
        },
        "parent_sha256": parent_sha256,
        "export_config": export_config,
        **(extra or {}),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress chatter."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
