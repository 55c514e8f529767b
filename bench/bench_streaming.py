"""Streaming vs windowed students: MACs per frame, latency per frame (onnxruntime and LiteRT, 1 thread), parity.

    python bench/bench_streaming.py [--presets tiny realtime] [--dtypes fp32 int8 a16w8] [--formats onnx tflite]
                                    [--block-cells 8] [--seconds 4]

Random-weight models (MACs and latency do not depend on the weights; streaming parity is exact either way).
The step graph takes ``--block-cells`` 64-sample cells per call (several values: one export each, 1 = the old
one-cell protocol). Streaming latency per frame = cells_per_frame / block_cells x (one B-cell step call) +
head_runs_per_frame x (one head call).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compress.export import ExportConfig, export
from compress.stream_export import (
    BLOCK_CELLS,
    DEFAULT_CONFIG,
    binary_function,
    binary_io,
    binary_step_functions,
    export_streaming,
)
from students.model import Student, preset
from students.streaming import (
    CELL,
    StreamingStep,
    head_runs_per_frame,
    streaming_macs_per_frame,
    windowed_macs_per_frame,
)
from teacher.constants import SAMPLE_RATE


def _timed(fn, *args, repeats: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench(
    name: str,
    dtypes: tuple[str, ...],
    seconds: float,
    out: Path,
    *,
    formats: tuple[str, ...] = ("onnx", "tflite"),
    block_cells: tuple[int, ...] = (BLOCK_CELLS,),
) -> list[dict]:
    torch.manual_seed(0)
    model = Student(preset(name)).eval()
    with (
        torch.no_grad()
    ):  # weights large enough that the outputs vary (default init saturates to near-constants)
        for p in model.parameters():
            p.normal_(0.0, 0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(SAMPLE_RATE * seconds))).astype(np.float32)
    calib = [(0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)]
    windows = (0.1 * rng.standard_normal((16, model.window_samples))).astype(np.float32)
    cfg = ExportConfig(formats=formats, dtypes=dtypes, fp32_tolerance=DEFAULT_CONFIG.fp32_tolerance)
    cards = []
    for b in block_cells:
        sub = out / f"{name}.b{b}"
        cards += export_streaming(model, calib, audio, sub, name=name, config=cfg, block_cells=b)
    windowed = export(
        model, windows, windows, out, name=name, config=ExportConfig(formats=formats, dtypes=dtypes)
    )
    cells_per_frame = SAMPLE_RATE / model.config.fps / CELL
    initial = [s.numpy() for s in StreamingStep(model).initial_state()]
    rows = []
    window_ms: dict[tuple[str, str], float] = {}
    for card_file in cards:
        card = json.loads(card_file.read_text())
        graphs = {g: card["graphs"][g] for g in ("step", "head")}
        d = card_file.parent
        step_fn, head_fn = binary_step_functions(
            d / graphs["step"]["file"], d / graphs["head"]["file"], {g: {k: graphs[g][k] for k in ("inputs", "outputs")} for g in graphs}
        )  # fmt: skip
        b = int(card["block_cells"])
        step_s = _timed(step_fn, audio[None, : card["block_samples"]], initial, repeats=300)
        head_s = _timed(head_fn, initial[-1], repeats=100)
        key = (card["format"], card["dtype"])
        if key not in window_ms:
            binary = next(
                p
                for p in windowed
                if p.name == f"{name}.{card['dtype']}.{'onnx' if card['format'] == 'onnx' else 'tflite'}"
            )
            window_fn = binary_function(binary, binary_io(binary, (["audio"], ["curves"])))
            window_ms[key] = 1e3 * _timed(window_fn, [windows[:1]], repeats=50)
        rows.append(
            {
                "preset": name,
                "format": card["format"],
                "dtype": card["dtype"],
                "block_cells": b,
                "macs_windowed": windowed_macs_per_frame(model),
                "macs_streaming": round(streaming_macs_per_frame(model)),
                "macs_ratio": windowed_macs_per_frame(model) / streaming_macs_per_frame(model),
                "head_runs_per_frame": head_runs_per_frame(model),
                "ms_per_frame_windowed": window_ms[key],
                "ms_per_frame_streaming": 1e3
                * (cells_per_frame / b * step_s + head_runs_per_frame(model) * head_s),
                "ms_step": 1e3 * step_s,
                "ms_head": 1e3 * head_s,
                "max_abs_diff_streamed_vs_windowed": card["parity"]["max_abs_diff"],
                "lookahead_ms": card["lookahead_ms"],
                "lookahead_ms_windowed": model.lookahead_ms,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "realtime"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "int8", "a16w8"])
    parser.add_argument("--formats", nargs="+", default=["onnx", "tflite"])
    parser.add_argument(
        "--block-cells", nargs="+", type=int, default=[BLOCK_CELLS], help="64-sample cells per step call"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="held-out clip streamed for parity")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            rows = bench(
                name,
                tuple(args.dtypes),
                args.seconds,
                Path(tmp),
                formats=tuple(args.formats),
                block_cells=tuple(args.block_cells),
            )
            for row in rows:
                print(
                    json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}),
                    flush=True,
                )


if __name__ == "__main__":
    main()
