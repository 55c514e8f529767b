"""Export a student to ONNX / TFLite (fp32, int8, a16w8) with a fixed one-window input, and prove every binary.

dtypes: ``fp32``; ``int8`` (full integer: int8 per-channel weights, int8 activations); ``a16w8`` (int8
per-channel weights, int16 activations: TFLite's "16x8" mode, onnxruntime QDQ with int16 activations). Raw 16 kHz
audio is the input of these students, and 256 int8 levels over [-1, 1] are too coarse for it (the sensitivity
report's "(input)" row); int16 activations keep the weight savings of int8 and pass the same parity gate.

Quantized binaries are built from a copy of the model whose weights already sit on the per-channel int8 grid,
rounded by GPTQ on the calibration windows (:func:`grid_weights`, ``ExportConfig.weight_rounding``); the quantizers
keep those integers, and parity is still measured against the original float model.

Each binary is written to a temporary file, run in its own runtime (onnxruntime with one thread, the LiteRT
interpreter) on held-out windows, compared with the PyTorch float model, and inspected tensor by tensor: an "int8"
binary whose conv weights stayed float, or any binary whose outputs drift past the tolerance, is refused with a
``FacedistillError`` and never reaches its final name. A model card (``name.card.json``) lands beside each binary.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.card import build_card, card_path, ort_session
from compress.quantize import ROUNDINGS, always_float, float_layers, quantize_pt2e, round_weights
from students.model import as_binary
from teacher.errors import FacedistillError
from teacher.fsutil import atomic_path, atomic_write_json, sha256_file

FORMATS = ("onnx", "tflite")
DTYPES = ("fp32", "int8", "a16w8")
QUANTIZED = ("int8", "a16w8")
FIXED_WEIGHTS = ("int8", "fp32")  # how quantized binaries store the weights of fixed float preprocessing
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
WEIGHT_OPS_ONNX = ("Conv", "MatMul", "Gemm", "ConvTranspose")
WEIGHT_OPS_TFLITE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")
INPUT_NAME, OUTPUT_NAME = "audio", "curves"


class ExportError(FacedistillError, ValueError):
    """A binary failed its parity or dtype check, or the export request is invalid.

    A parity refusal carries the measured ``max_abs_diff`` and the ``tolerance`` it missed (None otherwise)."""

    def __init__(
        self, msg: str, *, max_abs_diff: float | None = None, tolerance: float | None = None
    ) -> None:
        super().__init__(msg)
        self.max_abs_diff, self.tolerance = max_abs_diff, tolerance


@dataclass(frozen=True)
class ExportConfig:
    """Which binaries to write and how strictly to check them."""

    formats: tuple[str, ...] = FORMATS
    dtypes: tuple[str, ...] = DTYPES
    keep_float: tuple[str, ...] = ()  # module names (e.g. "head.2") left in float inside int8 binaries
    fp32_tolerance: float = 1e-4  # max |Δ| vs the PyTorch float model
    int8_tolerance: float = 0.02  # max |Δ| for every quantized dtype (int8 and a16w8)
    weight_rounding: str = "gptq"  # how float weights become int8 (compress.quantize.round_weights)
    # quantized binaries compute a fixed log-mel filterbank in float; "int8" stores its weights as per-channel int8
    # + a dequantize op (weight-only: 4x fewer bytes, same float arithmetic), "fp32" stores them as they are
    fixed_weights: str = "int8"
    version: int = 1

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS] + [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.formats or not self.dtypes:
            msg = f"export: unknown or empty formats/dtypes {bad or list(self.formats) + list(self.dtypes)}; choose from {FORMATS} and {DTYPES}"
            raise ExportError(msg)
        if self.fixed_weights not in FIXED_WEIGHTS:
            msg = f"export: unknown fixed_weights {self.fixed_weights!r}; choose from {FIXED_WEIGHTS}"
            raise ExportError(msg)
        if self.weight_rounding not in ROUNDINGS:
            msg = f"export: unknown weight rounding {self.weight_rounding!r}; choose from {ROUNDINGS}"
            raise ExportError(msg)
        if not (self.fp32_tolerance > 0 and self.int8_tolerance > 0):
            msg = "export: tolerances must be positive"
            raise ExportError(msg)
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def tolerance(self, dtype: str) -> float:
        return self.fp32_tolerance if dtype == "fp32" else self.int8_tolerance


def export(
    model: nn.Module,
    calib_windows: np.ndarray,
    heldout_windows: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    name: str,
    config: ExportConfig = ExportConfig(),
    parent_sha256: str | None = None,
    quality_fn: Callable[[Path], dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> list[Path]:
    """Write ``name.<dtype>.<format>`` for every requested pair into ``out_dir``; returns the binaries' paths.

    ``calib_windows`` [N, W] (real audio windows) calibrate int8 activation ranges; ``heldout_windows`` [M, W]
    (other utterances) are the parity set. ``quality_fn(binary)`` (e.g. test-split metrics of the binary itself)
    goes into each card. A binary whose card already names the same parent checkpoint and config is kept
    unless ``force``.
    """
    model = model.eval()
    window = int(model.window_samples)
    for label, arr in (("calibration", calib_windows), ("held-out", heldout_windows)):
        if arr.ndim != 2 or arr.shape[1] != window or len(arr) == 0:
            msg = f"{out_dir}: {label} windows have shape {arr.shape}, expected [N, {window}]"
            raise ExportError(msg)
    calib = np.ascontiguousarray(calib_windows, dtype=np.float32)
    heldout = np.ascontiguousarray(heldout_windows, dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(heldout)).numpy()
    # binaries take the input encoding's output (identity for linear students): build, calibrate and run them so
    binary_model, (calib, heldout) = as_binary(model, calib, heldout)
    out_dir = Path(out_dir)
    windows = _windows_digest(calib, heldout)
    written = []
    for fmt in config.formats:
        for dtype in config.dtypes:
            path = out_dir / f"{name}.{dtype}{SUFFIX[fmt]}"
            if not force and _up_to_date(path, parent_sha256, config, windows):
                written.append(path)
                continue
            if not force:
                _raise_recorded_refusal(path, parent_sha256, config, windows)
            # quantized binaries keep config.keep_float and the model's fixed float preprocessing (a log-mel
            # filterbank) in float; the latter's weights are stored as int8 unless config.fixed_weights says fp32
            fixed = always_float(binary_model) if dtype in QUANTIZED else ()
            keep = tuple(dict.fromkeys(fixed + config.keep_float))
            weight_only = fixed if config.fixed_weights == "int8" else ()
            with atomic_path(path) as tmp:
                source = binary_model if dtype == "fp32" else grid_weights(binary_model, calib, config, keep)
                io_quant = _write_binary(
                    source, fmt, dtype, calib, tmp, keep_float=keep, weight_only=weight_only
                )
                outputs = run_binary(tmp, heldout)
                try:
                    parity = check_parity(path, outputs, reference, tolerance=config.tolerance(dtype))
                    # calibration + held-out windows: a rerun on other audio rebuilds (_up_to_date)
                    parity["windows_sha256"] = windows
                    if dtype in QUANTIZED:
                        check_int8(tmp, path, keep_float=tuple(float_layers(binary_model, keep)))
                except ExportError as exc:
                    # a verdict on this very binary: remember it, so a rerun with the same inputs need not redo it
                    _record_refusal(path, parent_sha256, config, windows, exc)
                    raise
                card = build_card(
                    model,
                    tmp,
                    fmt=fmt,
                    dtype=dtype,
                    io_quant=io_quant,
                    keep_float=keep,
                    weight_only=weight_only,
                    parity=parity,
                    parent_sha256=parent_sha256,
                    quality=None if quality_fn is None else quality_fn(tmp),
                    export_config=config.to_dict(),
                    extra=extra,
                )
            atomic_write_json(card_path(path), card)
            refusal_path(path).unlink(missing_ok=True)
            written.append(path)
    return written


def export_each(
    model: nn.Module,
    calib_windows: np.ndarray,
    heldout_windows: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    name: str,
    config: ExportConfig = ExportConfig(),
    **kwargs: Any,
) -> tuple[list[Path], dict[tuple[str, str], ExportError]]:
    """:func:`export` one (format, dtype) pair at a time, so a refused binary does not stop the others.

    Returns the written paths and the refusals keyed by (format, dtype)."""
    paths: list[Path] = []
    refused: dict[tuple[str, str], ExportError] = {}
    for fmt in config.formats:
        for dtype in config.dtypes:
            one = dataclasses.replace(config, formats=(fmt,), dtypes=(dtype,))
            try:
                paths += export(
                    model, calib_windows, heldout_windows, out_dir, name=name, config=one, **kwargs
                )
            except ExportError as exc:
                refused[(fmt, dtype)] = exc
    return paths, refused


def grid_weights(
    model: nn.Module, calib: np.ndarray, config: ExportConfig, keep_float: tuple[str, ...] | None = None
) -> nn.Module:
    """The model a quantized binary is built from: weights already on the int8 grid, rounded by
    ``config.weight_rounding`` on the calibration windows, except ``keep_float`` modules (default
    ``config.keep_float``), left as they are."""
    keep = config.keep_float if keep_float is None else keep_float
    rounded = round_weights(model, calib, method=config.weight_rounding)
    source = dict(model.named_modules())
    for name, module in rounded.named_modules():
        if name in keep:
            module.load_state_dict(source[name].state_dict())
    return rounded.eval()


def refusal_path(binary: Path) -> Path:
    """``dir/name.int8.onnx`` -> ``dir/name.int8.onnx.refused.json``: the record of a binary the checks refused."""
    return binary.with_name(binary.name + ".refused.json")


def _config_key(config: ExportConfig) -> dict[str, Any]:
    """``config`` as it reads back from a card or refusal record (JSON: tuples become lists)."""
    return json.loads(json.dumps(config.to_dict()))


def _windows_digest(calib: np.ndarray, heldout: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in (calib, heldout):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def _read_refusals(record_file: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(record_file.read_text())["refusals"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return []


def _record_refusal(
    path: Path, parent_sha256: str | None, config: ExportConfig, windows: str, exc: ExportError
) -> None:
    """Add what the parity/int8 checks said of ``path`` to its refusal record, keyed by everything that determines
    it: the parent checkpoint, the export config (keep-float retries differ here) and the calibration and held-out
    windows. Entries of another parent or other windows are dropped; nothing is recorded without a parent hash."""
    if parent_sha256 is None:
        return
    entry = {
        "parent_sha256": parent_sha256,
        "export_config": _config_key(config),
        "windows_sha256": windows,
        "error": str(exc),
        "max_abs_diff": exc.max_abs_diff,
        "tolerance": exc.tolerance,
    }
    record_file = refusal_path(path)
    kept = [
        r
        for r in _read_refusals(record_file)
        if r.get("parent_sha256") == parent_sha256
        and r.get("windows_sha256") == windows
        and r.get("export_config") != entry["export_config"]
    ]
    atomic_write_json(record_file, {"binary": path.name, "refusals": [*kept, entry]})


def _raise_recorded_refusal(
    path: Path, parent_sha256: str | None, config: ExportConfig, windows: str
) -> None:
    """Raise the recorded refusal of ``path`` again if it was made from the same parent, config and windows: the
    build is deterministic, so a rerun (``compress run`` resuming) would only measure the same miss again."""
    if parent_sha256 is None:
        return
    record_file = refusal_path(path)
    wanted = _config_key(config)
    for r in _read_refusals(record_file):
        if (
            r.get("parent_sha256") == parent_sha256
            and r.get("export_config") == wanted
            and r.get("windows_sha256") == windows
        ):
            raise ExportError(
                f"{r['error']} (recorded in {record_file.name}: delete it, or export with --force, to rebuild)",
                max_abs_diff=r.get("max_abs_diff"),
                tolerance=r.get("tolerance"),
            )


def _up_to_date(path: Path, parent_sha256: str | None, config: ExportConfig, windows: str) -> bool:
    """The binary and its card exist and were made from this parent, export config and calibration/held-out
    windows (a card without the windows' hash predates it and is rebuilt)."""
    card = card_path(path)
    if parent_sha256 is None or not (path.is_file() and card.is_file()):
        return False
    try:
        data = json.loads(card.read_text())
    except json.JSONDecodeError:
        return False
    return (
        data.get("parent_sha256") == parent_sha256
        and data.get("export_config") == _config_key(config)
        and (data.get("parity") or {}).get("windows_sha256") == windows
        and data.get("sha256") == sha256_file(path)
    )


def _write_binary(
    model: nn.Module,
    fmt: str,
    dtype: str,
    calib: np.ndarray,
    path: Path,
    *,
    keep_float: tuple[str, ...],
    weight_only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write one binary to ``path``; returns the integer I/O quantization (empty when I/O is float).

    ``weight_only`` (a subset of ``keep_float``: fixed float preprocessing) get int8-stored weights, float compute."""
    example = torch.from_numpy(calib[:1])
    if fmt == "onnx":
        _export_onnx_fp32(model, example, path)
        if dtype in QUANTIZED:
            feeds = ({INPUT_NAME: calib[i : i + 1]} for i in range(len(calib)))
            quantize_onnx_qdq(path, feeds, keep_float, dtype=dtype, audio_inputs=(INPUT_NAME,))
    elif dtype == "fp32":
        _export_tflite(model, example, path, quant_config=None)
    elif dtype == "a16w8":
        _export_tflite(model, example, path, quant_config=None)
        quantize_tflite_a16w8(
            path,
            [[calib[i : i + 1]] for i in range(len(calib))],
            keep_float,
            audio_inputs=(0,),
            fixed_scopes=tflite_scopes(model, always_float(model)),
        )
    else:
        quantized, quantizer = quantize_pt2e(model, calib, keep_float=keep_float)
        _export_tflite(quantized, example, path, quant_config=quantizer)
    if dtype in QUANTIZED and weight_only:
        int8_weight_only(path, model, weight_only)
    return io_quantization(path)


def tflite_scopes(model: nn.Module, modules: tuple[str, ...]) -> tuple[str, ...]:
    """Regexes matching the LiteRT tensor names of top-level submodules: litert-torch names tensors by the module
    path as ``<module class>_<attribute>`` (``students.model.LogMel_logmel/...``), with nested containers elided,
    so only a top-level attribute maps to its tensors unambiguously."""
    children = dict(model.named_children())
    scopes = []
    for name in modules:
        if name not in children:
            msg = f"{name!r} is not a top-level module of {type(model).__name__}; LiteRT scopes need one"
            raise ExportError(msg)
        cls = type(children[name])
        scopes.append(re.escape(f"{cls.__module__}.{cls.__qualname__}_{name}") + r"(/|;|$)")
    return tuple(scopes)


def int8_weight_only(path: Path, model: nn.Module, modules: tuple[str, ...]) -> None:
    """Store the float weights of ``modules`` (left float by the quantizer) as symmetric per-output-channel int8
    plus a dequantize op, in place; their arithmetic stays float (weight-only quantization). ONNX: an int8
    initializer -> DequantizeLinear (axis 0) -> Conv; TFLite: ai-edge-quantizer's weight-only recipe on those
    scopes (int8 buffer -> DEQUANTIZE -> float conv)."""
    if _binary_format(path) == "onnx":  # quantized graphs lose the exporter's scopes: name the weight layers
        _int8_weight_only_onnx(path, tuple(float_layers(model, modules)))
    else:
        _int8_weight_only_tflite(path, tflite_scopes(model, modules))


def _int8_weight_only_onnx(path: Path, modules: tuple[str, ...]) -> None:
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    targets = set(onnx_nodes_of(proto, modules))
    inits = {init.name: init for init in proto.graph.initializer}
    dequantize = []
    for node in proto.graph.node:
        if node.name not in targets or node.op_type not in WEIGHT_OPS_ONNX or node.input[1] not in inits:
            continue
        name = node.input[1]
        init = inits.pop(name)
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        peak = np.abs(w.reshape(len(w), -1)).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shape = (-1,) + (1,) * (w.ndim - 1)
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        proto.graph.initializer.remove(init)
        proto.graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros(len(w), np.int8), f"{name}_zero_point"),
            ]
        )
        dequantize.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                [name],
                name=f"{name}_DequantizeLinear",
                axis=0,
            )
        )
    if not dequantize:
        msg = f"{path}: no float weights of {list(modules)} to store as int8"
        raise ExportError(msg)
    for i, node in enumerate(dequantize):  # before every consumer: graph nodes are in topological order
        proto.graph.node.insert(i, node)
    onnx.save(proto, str(path))


def _int8_weight_only_tflite(path: Path, scopes: tuple[str, ...]) -> None:
    from ai_edge_quantizer import quantizer, recipe

    weight_only = recipe.weight_only_wi8_afp32()[0]
    q = quantizer.Quantizer(path.read_bytes())
    q.load_quantization_recipe([{**weight_only, "regex": scope} for scope in scopes])
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input model is already partially quantized": the int8 layers stay
        result = q.quantize()
    result.export_model(str(path), overwrite=True)


def _export_onnx_fp32(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)


RANGE_MARGIN = {"int8": 0.0, "a16w8": 0.5}  # activation ranges widened by this x (max - min) per side


def quant_range(
    low: np.ndarray, high: np.ndarray, *, dtype: str, audio: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The range a quantized tensor gets from its calibrated [low, high]: exactly [-1, 1] for an audio input (the
    audio contract), else widened by ``RANGE_MARGIN[dtype]`` x its width on each side (a zero floor, e.g. after
    ReLU, stays).

    Min/max calibration clips any held-out activation beyond the calibration extremes; a rare clipped logit is what
    sets a quantized model's max |Δ| (one clipped pre-sigmoid value moved an output by 0.064 while the mean |Δ|
    was 1e-4). With int16 activations a 2x wider range costs 1 of 16 bits and removes that clipping."""
    low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
    if audio:
        return np.full_like(low, -1.0), np.full_like(high, 1.0)
    margin, width = RANGE_MARGIN[dtype], high - low
    return np.where(low < 0, low - margin * width, low).astype(np.float32), high + margin * width


def quantize_onnx_qdq(
    path: Path,
    feeds: Iterable[dict[str, np.ndarray]],
    keep_float: tuple[str, ...],
    *,
    dtype: str = "int8",
    audio_inputs: tuple[str, ...] = (),
) -> None:
    """onnxruntime static QDQ quantization in place: per-channel int8 weights, int8 (``dtype`` "int8") or int16
    ("a16w8") activations calibrated on ``feeds`` (input name -> array dicts) by min/max, ranges set by
    :func:`quant_range` (inputs named in ``audio_inputs`` are audio). Nodes of the ``keep_float`` modules stay float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        create_calibrator,
        save_tensors_data,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    exclude = onnx_nodes_of(onnx.load(str(path)), keep_float)
    with tempfile.TemporaryDirectory() as tmpdir, _quiet():
        pre, cache = Path(tmpdir) / "pre.onnx", Path(tmpdir) / "ranges.json"
        quant_pre_process(str(path), str(pre))
        calibrator = create_calibrator(
            pre,
            augmented_model_path=str(Path(tmpdir) / "aug.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
        )
        calibrator.collect_data(_Reader())
        ranges = calibrator.compute_data()
        audio = audio_tensors(onnx.load(str(pre)), audio_inputs)
        for name, data in list(ranges.items()):
            low, high = quant_range(*data.range_value, dtype=dtype, audio=name in audio)
            ranges[name] = TensorData(lowest=low, highest=high)
        save_tensors_data(ranges, cache)  # quantize_static takes precomputed ranges only through this cache
        quantize_static(
            str(pre),
            str(path),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt16 if dtype == "a16w8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibration_cache_path=str(cache),
        )


SHAPE_OPS_ONNX = ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Transpose", "Expand")


def audio_tensors(model_proto: Any, inputs: Iterable[str]) -> set[str]:
    """The graph inputs ``inputs`` and every tensor that only reshapes them (``Unsqueeze`` and the like): the
    same samples, so the same [-1, 1] quantization range. Exporter versions differ in where a quantizer first
    meets the audio (onnx-ir 1.1 emits an Unsqueeze first, and the QDQ pair lands on its output)."""
    audio = set(inputs)
    for node in model_proto.graph.node:
        if node.op_type in SHAPE_OPS_ONNX and node.input and node.input[0] in audio:
            audio.update(node.output)
    return audio


def quantize_tflite_a16w8(
    path: Path,
    feeds: list[list[np.ndarray]],
    keep_float: tuple[str, ...],
    *,
    audio_inputs: tuple[int, ...] = (),
    fixed_scopes: tuple[str, ...] = (),
) -> None:
    """ai-edge-quantizer ``static_wi8_ai16`` in place: int8 per-channel weights, int16 activations, calibrated on
    ``feeds`` (one list of positional inputs per call) with plain min/max ranges (the library's default moving
    average under-covers rare loud windows, which then clip), set by :func:`quant_range` (positional inputs in
    ``audio_inputs`` are audio). Ops under ``fixed_scopes`` (:func:`tflite_scopes` of fixed float preprocessing)
    are left float. LiteRT names tensors by ``<class>_<attribute>`` with containers elided, so other
    ``keep_float`` layers cannot be located: with ``keep_float`` beyond those scopes it is refused."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe
    from ai_edge_quantizer.utils import qsv_utils

    if len(keep_float) > len(fixed_scopes):
        msg = f"{path}: keep_float {list(keep_float)} is not supported for TFLite a16w8 (LiteRT keeps no module paths)"
        raise ExportError(msg)
    float_model = path.read_bytes()
    interp = Interpreter(model_content=float_model)
    signature, spec = next(iter(interp.get_signature_list().items()))
    names = sorted(spec["inputs"], key=lambda k: int(k.rsplit("_", 1)[1]))  # args_0, args_1, ... = call order
    data = {signature: [dict(zip(names, call)) for call in feeds]}
    runner = interp.get_signature_runner(signature)
    audio = {runner.get_input_details()[names[i]]["name"] for i in audio_inputs}  # their tensor names
    q = quantizer.Quantizer(float_model)
    no_quantize = {"operation": "*", "algorithm_key": "no_quantize", "op_config": {}}
    q.load_quantization_recipe(recipe.static_wi8_ai16() + [{**no_quantize, "regex": s} for s in fixed_scopes])
    with _quiet():
        calib = calibrator.Calibrator(float_model, num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate(data, q._recipe_manager)  # the public Quantizer.calibrate has no min/max option
        qsvs = calib.get_model_qsvs()
        for name, qsv in qsvs.items():
            qsv["min"], qsv["max"] = quant_range(qsv["min"], qsv["max"], dtype="a16w8", audio=name in audio)
        result = q.quantize(qsvs)
    result.export_model(str(path), overwrite=True)  # ``path`` is export()'s temporary file


def onnx_nodes_of(model_proto: Any, modules: tuple[str, ...]) -> list[str]:
    """Names of the ONNX nodes that implement the given PyTorch modules: the weight node of a layer (matched by
    weight name), and for a module holding several layers (``"logmel"``) every node the exporter recorded under
    that module's scope (``pkg.torch.onnx.name_scopes``), so the ops between its layers stay float too."""
    nodes: dict[str, list[str]] = {}
    for node in model_proto.graph.node:
        if node.op_type in WEIGHT_OPS_ONNX and len(node.input) > 1:
            nodes.setdefault(_module_of_weight(node.input[1]), []).append(node.name)
    for node in model_proto.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is None:
            continue
        try:
            names = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        for m in modules:
            if m in names and node.name not in nodes.get(m, []):
                nodes.setdefault(m, []).append(node.name)
    missing = [m for m in modules if m not in nodes]
    if missing:
        msg = f"keep_float names {missing} are not weight layers of this model; layers: {sorted(nodes)}"
        raise ExportError(msg)
    return [name for m in modules for name in nodes[m]]


def _module_of_weight(name: str) -> str:
    for suffix in (".weight_DequantizeLinear_Output", ".weight"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _export_tflite(model: nn.Module, example: torch.Tensor, path: Path, *, quant_config: Any) -> None:
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    kwargs = {} if quant_config is None else {"quant_config": QuantConfig(pt2e_quantizer=quant_config)}
    with _quiet():
        edge = litert_torch.convert(model, (example,), **kwargs)
        edge.export(str(path))


def io_quantization(path: Path) -> dict[str, Any]:
    """Scale/zero-point of int8 inputs and outputs (empty dict when the binary takes and gives float32)."""
    if _binary_format(path) == "onnx":
        return {}
    interp = _tflite_interpreter(path)
    out = {}
    for role, details in (("input", interp.get_input_details()), ("output", interp.get_output_details())):
        d = details[0]
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            out[role] = {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
    return out


def _binary_format(path: Path) -> str:
    """The format of ``path`` from its magic bytes (temporary files carry no meaningful suffix)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return "tflite" if head[4:8] == b"TFL3" else "onnx"


def run_binary(path: str | os.PathLike, windows: np.ndarray) -> np.ndarray:
    """Run an ONNX or TFLite binary, one window per call with one thread, as an engine would."""
    path = Path(path)
    if _binary_format(path) == "onnx":
        try:
            session = ort_session(path)
            name = session.get_inputs()[0].name
            return np.concatenate([session.run(None, {name: w[None]})[0] for w in windows])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            msg = f"{path}: onnxruntime cannot run this binary ({str(exc).splitlines()[0]})"
            raise ExportError(msg) from None
    interp = _tflite_interpreter(path)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for w in windows:
        interp.set_tensor(inp["index"], _to_io(w[None], inp))
        interp.invoke()
        rows.append(_from_io(interp.get_tensor(out["index"]), out))
    return np.concatenate(rows)


def _to_io(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_io(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def _tflite_interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        msg = f"{path}: the LiteRT interpreter cannot load this binary ({exc})"
        raise ExportError(msg) from None
    return interp


def check_parity(
    path: Path, outputs: np.ndarray, reference: np.ndarray, *, tolerance: float
) -> dict[str, Any]:
    """max/mean |Δ| of a binary's outputs vs the PyTorch float model; refuses a binary beyond ``tolerance``."""
    if outputs.shape != reference.shape:
        msg = f"{path}: binary output shape {outputs.shape} != PyTorch output shape {reference.shape}"
        raise ExportError(msg)
    delta = np.abs(outputs.astype(np.float64) - reference)
    parity = {
        "max_abs_diff": float(delta.max()),
        "mean_abs_diff": float(delta.mean()),
        "windows": len(reference),
        "tolerance": tolerance,
    }
    if not np.isfinite(delta).all() or parity["max_abs_diff"] > tolerance:
        msg = f"{path}: refused, output differs from the PyTorch model by max |Δ| {parity['max_abs_diff']:.3g} > {tolerance:g} on {len(reference)} held-out windows"
        raise ExportError(msg, max_abs_diff=parity["max_abs_diff"], tolerance=tolerance)
    return parity


def check_int8(tmp: Path, path: Path, *, keep_float: tuple[str, ...] = ()) -> None:
    """Refuse an "int8" binary whose weight layers (other than ``keep_float``) still hold float weights."""
    float_layers = (
        onnx_float_weight_layers(tmp) if _binary_format(tmp) == "onnx" else tflite_float_weight_ops(tmp)
    )
    allowed = set(keep_float)
    if _binary_format(tmp) == "onnx":
        leftover = sorted(set(float_layers) - allowed)
    else:  # LiteRT drops module names: compare counts of float weight ops
        leftover = float_layers[len(allowed) :] if len(float_layers) > len(allowed) else []
    if leftover:
        msg = f"{path}: refused, int8 binary still has float weights in {len(leftover)} layer(s) {leftover[:4]} (not in keep_float={list(keep_float)})"
        raise ExportError(msg)


def onnx_float_weight_layers(path: Path) -> list[str]:
    """Weight layers of an ONNX graph whose weights are not DequantizeLinear of an int8 initializer."""
    import onnx

    proto = onnx.load(str(path))
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    dequant = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    bad = []
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS_ONNX or len(node.input) < 2:
            continue
        weight = node.input[1]
        source = dequant.get(weight)
        if source is None or inits.get(source) != onnx.TensorProto.INT8:
            bad.append(_module_of_weight(weight))
    return bad


def tflite_float_weight_ops(path: Path) -> list[str]:
    """Weight ops (conv / fully connected) of a TFLite model whose weight tensor is not int8, nor made by a
    DEQUANTIZE op from an int8 tensor (weight-only int8: stored int8, computed float)."""
    interp = _tflite_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no per-op view; this is LiteRT's own helper
    dequantized = {int(op["outputs"][0]): int(op["inputs"][0]) for op in ops if op["op_name"] == "DEQUANTIZE"}
    bad = []
    for op in ops:
        if op["op_name"] in WEIGHT_OPS_TFLITE:
            index = int(op["inputs"][1])
            weight = details.get(dequantized.get(index, index))
            if weight is None or weight["dtype"] != np.int8:
                bad.append(f"{op['op_name']}#{op['index']}")
    return bad


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter on stdout/stderr (progress lines, op counts) unless it fails."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
