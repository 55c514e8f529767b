"""Model cards: everything an engine programmer needs to feed a binary and read its output, in one JSON file.

A card sits beside its binary (``name.int8.onnx`` -> ``name.int8.onnx.card.json``) and records the input window, the
output channels, the frame-to-sample mapping, size, quantization scheme, the parent checkpoint's hash and the
measured parity with the PyTorch model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from students.model import LOGMEL_FLOOR, LOGMEL_SCALE
from teacher.constants import ANCHOR_QUANTUM, SAMPLE_RATE, samples_to_ms
from teacher.fsutil import sha256_file

CARD_VERSION = 1

# onnxruntime's default int8 conv/matmul kernels on x86-64 CPUs without VNNI (AVX2 only, e.g. AMD EPYC before Zen 4)
# multiply u8 x s8 pairs with vpmaddubsw, whose int16 pair sums saturate: int8 binaries then drift from their own QDQ
# arithmetic (a toy mu-law student: max |Δ| 0.071 vs 0.012 with this option, which takes ORT's exact path; CPUs with
# VNNI and ARM are unaffected). Every facedistill session sets it, and ONNX cards tell engines to (``runtime`` key).
ORT_SESSION_CONFIG = {"session.x64quantprecision": "1"}
ORT_RUNTIME_NOTE = (
    "onnxruntime: set these session config entries (SessionOptions.add_session_config_entry); on x86-64 CPUs "
    "without VNNI the default int8 kernels saturate and drift from the parity measured here"
)


def ort_session(path: str | os.PathLike, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session as an engine should make one (the one parity, quality and the profiler measure):
    ``threads`` intra/inter-op threads, sequential execution, ORT_SESSION_CONFIG set."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    for key, value in ORT_SESSION_CONFIG.items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def runtime_settings(fmt: str) -> dict[str, Any]:
    """A card's ``runtime`` entry: what an engine must set when it loads a binary of format ``fmt``."""
    if fmt != "onnx":
        return {}
    return {"onnxruntime_session_config": ORT_SESSION_CONFIG, "note": ORT_RUNTIME_NOTE}


FRAME_MAPPING = (
    "Output row k (frame k at `fps`) is computed from the audio window [anchor_k - past_samples, "
    "anchor_k + future_samples) where anchor_k = 64 * floor((2 * k * 16000 + fps * 64) / (2 * fps * 64)) samples (integer division), i.e. the time k/fps "
    "rounded to the nearest multiple of 64 samples (4 ms); samples before 0 or past the end of the audio are "
    "zeros. To emit frame k live you need audio up to anchor_k + future_samples, so the algorithmic latency is "
    "lookahead_ms plus the time to run one window."
)


INPUT_MEANING = {
    "linear": "mono PCM in [-1, 1] (float); integer inputs are round(x / scale) + zero_point",
    "mulaw": (
        "mono PCM x in [-1, 1] after mu-law companding y = sign(x) * ln(1 + mu * |x|) / ln(1 + mu) (see "
        "input.encoding); integer inputs are round(y / scale) + zero_point"
    ),
}


def frontend(model: nn.Module, weight_only: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the binary's first layers compute from the audio (the host feeds audio either way); ``weight_only``:
    the fixed modules whose weights this binary stores as int8."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "frontend", "waveform") == "waveform":
        return {"type": "waveform", "meaning": "learned convolutions read the audio samples directly"}
    return {
        "type": cfg.frontend,
        "window_samples": cfg.logmel_samples,
        "hop_samples": ANCHOR_QUANTUM,
        "bands": cfg.logmel_bands,
        "meaning": "inside the binary, fixed: Hamming-windowed DFT conv, power, mel filter conv, "
        f"(log(power + {LOGMEL_FLOOR:g}) - {model.logmel.center:.4f}) * {LOGMEL_SCALE:g}; it computes in "
        "float in quantized binaries (see quantization.keep_float)"
        + (
            ", from weights stored as per-channel int8 and dequantized (quantization.weight_only_int8)"
            if "logmel" in weight_only
            else ""
        ),
    }


def input_encoding(model: nn.Module) -> dict[str, Any]:
    """What the host does to the audio before the binary's input (``{"type": "linear"}`` = nothing)."""
    cfg = model.config
    if cfg.input_encoding == "linear":
        return {"type": "linear"}
    return {
        "type": cfg.input_encoding,
        "mu": float(cfg.input_mu),
        "formula": "y = sign(x) * log(1 + mu * abs(x)) / log(1 + mu), elementwise on every sample of the window",
    }


def card_path(binary: str | os.PathLike) -> Path:
    """``dir/name.int8.onnx`` -> ``dir/name.int8.onnx.card.json`` (ONNX and TFLite twins share a stem)."""
    binary = Path(binary)
    return binary.with_name(binary.name + ".card.json")


def model_timing(model: nn.Module) -> dict[str, Any]:
    """Window/timing facts of a student: the window starts ``left_context`` samples before the anchor."""
    cfg = model.config
    window = int(model.window_samples)
    past = int(model.left_context)
    return {
        "sample_rate": SAMPLE_RATE,
        "window_samples": window,
        "past_samples": past,
        "future_samples": window - past,
        "past_ms": samples_to_ms(past),
        "future_ms": samples_to_ms(window - past),
        "fps": int(cfg.fps),
        "channel_names": list(cfg.channel_names),
        "lookahead_ms": float(model.lookahead_ms),
    }


def quantization_scheme(fmt: str, dtype: str) -> str:
    """One line a runtime programmer can act on: what is quantized how, and by which tool."""
    if dtype == "fp32":
        return "fp32"
    if dtype == "a16w8":
        tool = (
            "onnxruntime QDQ" if fmt == "onnx" else "ai-edge-quantizer static_wi8_ai16, LiteRT 16x8 kernels"
        )
        return (
            "a16w8: symmetric per-output-channel int8 weights, per-tensor int16 activations calibrated (min/max) "
            f"on real audio windows ({tool})"
        )
    tool = "onnxruntime QDQ" if fmt == "onnx" else "PT2E, LiteRT full-integer kernels"
    return (
        "int8: symmetric per-output-channel weights, per-tensor int8 activations calibrated on real audio "
        f"windows ({tool})"
    )


def build_card(
    model: nn.Module,
    binary: str | os.PathLike,
    *,
    fmt: str,
    dtype: str,
    io_quant: dict[str, Any],
    keep_float: tuple[str, ...],
    parity: dict[str, Any],
    parent_sha256: str | None,
    weight_only: tuple[str, ...] = (),
    quality: dict[str, Any] | None = None,
    export_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of one checked binary (``binary`` may still be its temporary path)."""
    timing = model_timing(model)
    channels = timing["channel_names"]
    window = timing["window_samples"]
    params = sum(p.numel() for p in model.parameters())
    scheme = quantization_scheme(fmt, dtype)
    encoding = input_encoding(model)
    card = {
        "card_version": CARD_VERSION,
        "format": fmt,
        "dtype": dtype,
        "file_bytes": os.path.getsize(binary),
        "sha256": sha256_file(binary),
        "params": params,
        "input": {
            "name": "audio",
            "shape": [1, window],
            "dtype": io_quant.get("input", {}).get("dtype", "float32"),
            "quantization": io_quant.get("input"),
            "meaning": INPUT_MEANING[encoding["type"]],
            "encoding": encoding,
            "sample_rate": timing["sample_rate"],
            "window_samples": window,
            "past_ms": timing["past_ms"],
            "future_ms": timing["future_ms"],
            "past_samples": timing["past_samples"],
            "future_samples": timing["future_samples"],
        },
        "output": {
            "name": "curves",
            "shape": [1, len(channels)],
            "dtype": io_quant.get("output", {}).get("dtype", "float32"),
            "quantization": io_quant.get("output"),
            "channel_names": channels,
            "range": [0.0, 1.0],
            "fps": timing["fps"],
        },
        "lookahead_ms": timing["lookahead_ms"],
        "frontend": frontend(model, weight_only),
        "frame_mapping": {
            "anchor_quantum_samples": ANCHOR_QUANTUM,
            "formula": "anchor_k = 64 * ((2 * k * 16000 + fps * 64) // (2 * fps * 64)); window_k = audio[anchor_k - past_samples : anchor_k + future_samples] (zero-padded)",
            "explanation": FRAME_MAPPING,
        },
        "runtime": runtime_settings(fmt),
        "quantization": {
            "scheme": scheme,
            "keep_float": list(keep_float),
            # float compute, int8-stored weights (int8 tensor -> dequantize -> float op)
            "weight_only_int8": list(weight_only),
        },
        "parent_sha256": parent_sha256,
        "parity": parity,
        "quality": quality,
        "export_config": export_config,
    }
    if extra:
        card.update(extra)
    return card
