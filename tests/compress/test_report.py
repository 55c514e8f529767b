"""Report (summary.json, REPORT.md, plots, regenerated from disk) and the preview video."""

from __future__ import annotations

import json
import subprocess

import imageio_ffmpeg
import numpy as np

from compress.render import render_frames, render_preview
from compress.report import collect_results, save_example, write_report
from teacher.constants import ARKIT_52

FPS = 30


def _example_curves(n, jaw):
    c = np.zeros((n, len(ARKIT_52)), np.float32)
    c[:, ARKIT_52.index("jawOpen")] = jaw
    return c


def _fake_run(run):
    (run / "teacher").mkdir(parents=True)
    (run / "teacher" / "teacher.pt").write_bytes(b"x" * 4000)
    test = {"mse": 0.01, "mse_mean_baseline": 0.05, "velocity_mse": 0.001, "lip_closure": 0.9,
            "lip_closure_ground_truth": 1.0, "jitter_ratio": 1.1,
            "mse_per_channel": {"jawOpen": 0.02, "mouthClose": 0.03}}  # fmt: skip
    (run / "teacher" / "teacher.json").write_text(
        json.dumps({"artifact": "teacher.pt", "decoder_params": 1000, "metrics": {"test": test}})
    )
    (run / "binaries").mkdir()
    for name, size, mse, la in (("small.int8", 1000, 0.02, 32.0), ("big.fp32", 3000, 0.015, 64.0)):
        (run / "binaries" / f"{name}.onnx").write_bytes(b"0" * size)
        card = {"preset": name.split(".")[0], "format": "onnx", "dtype": name.split(".")[1], "params": 10,
                "lookahead_ms": la, "parity": {"max_abs": 1e-3},
                "test": {"mse": mse, "velocity_mse": 0.002, "lip_closure": 0.8, "jitter_ratio": 1.2,
                         "mse_per_channel": {"jawOpen": mse, "mouthClose": 2 * mse}}}  # fmt: skip
        (run / "binaries" / f"{name}.onnx.card.json").write_text(json.dumps(card))
    (run / "profile").mkdir()
    profile = {"binaries": [{"binary": str(run / "binaries" / "small.int8.onnx"), "format": "onnx",
                             "bytes": 1000, "peak_activation_bytes": 512, "lookahead_ms": 31.0,
                             "macs_per_frame": 12345, "latency_ms": {"median": 0.1, "p99": 0.2},
                             "real_time_factor": 333.0, "budgets": {"wearable": {"pass": True}}}]}  # fmt: skip
    (run / "profile" / "p.json").write_text(json.dumps(profile))
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, 16000).astype(np.float32)
    save_example(run / "example.npz", utterance="utt0", audio=audio, fps=FPS, channel_names=list(ARKIT_52),
                 curves_by_label={"ground truth": _example_curves(30, 0.5), "teacher": _example_curves(30, 0.4),
                                  "small.int8": _example_curves(30, 0.3)})  # fmt: skip


def test_report_from_disk(tmp_path):
    run, out = tmp_path / "run", tmp_path / "reports"
    _fake_run(run)
    results = collect_results(run)
    assert results["teacher"]["params"] == 1000 and results["teacher"]["bytes"] == 4000
    small = next(m for m in results["models"] if m["name"] == "small.int8.onnx")
    assert small["lookahead_ms"] == 31.0  # the verified value wins over the card's 32
    assert small["budgets"] == {"wearable": "pass"} and small["parity_max_abs"] == 1e-3
    paths = write_report(run, out, results=results, preview=False)
    names = {p.name for p in paths}
    assert {"summary.json", "REPORT.md", "size_vs_quality.png", "lookahead_vs_quality.png",
            "per_channel_error.png", "example_curves.png"} <= names  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    model_keys = {"name", "preset", "format", "dtype", "pruned", "streaming", "bytes", "params",
                  "peak_activation_bytes", "lookahead_ms", "macs_per_frame", "parity_max_abs", "latency_ms",
                  "real_time_factor", "test", "budgets"}  # fmt: skip
    assert all(model_keys <= set(m) for m in summary["models"])
    assert {"mse", "mse_mean_baseline", "lip_closure", "jitter_ratio"} <= set(summary["teacher"]["test"])
    md = (out / "REPORT.md").read_text()
    assert "paper (published)" in md and "3,400,000" in md and "| 81 |" in md
    assert "| small.int8.onnx | 4 |" in md  # teacher 4000 B / student 1000 B, in the ratio table
    assert "![size_vs_quality](size_vs_quality.png)" in md


def _probe(path):
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True
    )
    return proc.stderr.decode()


def test_preview_video_has_video_and_audio(tmp_path):
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, 16000).astype(np.float32)
    curves = {"teacher": _example_curves(FPS, np.linspace(0, 1, FPS)), "student": _example_curves(FPS, 0.2)}
    out = render_preview(audio, curves, FPS, tmp_path / "p.mp4")
    info = _probe(out)
    assert "Video: h264" in info and "Audio: aac" in info


def test_frames_follow_jaw_open():
    closed = render_frames({"a": _example_curves(1, 0.0)}, list(ARKIT_52))
    opened = render_frames({"a": _example_curves(1, 1.0)}, list(ARKIT_52))
    assert closed.shape == opened.shape == (1, 240, 240, 3)
    assert np.mean(closed != opened) > 0.01


def test_streaming_pair_is_a_row_beside_its_windowed_twin(tmp_path):
    run, out = tmp_path / "run", tmp_path / "reports"
    _fake_run(run)
    graphs = {"step": {"file": "small.stream.int8.step.onnx", "file_bytes": 700},
              "head": {"file": "small.stream.int8.head.onnx", "file_bytes": 500}}  # fmt: skip
    card = {"kind": "streaming", "format": "onnx", "dtype": "int8", "params": 10, "graphs": graphs,
            "lookahead_ms": 32.0, "parity": {"max_abs_diff": 0.004},
            "macs_per_frame": {"streaming": 1000.5, "windowed": 12000, "head_runs_per_frame": 1.0},
            "preset": "small", "pruned": False, "streaming": True}  # fmt: skip
    (run / "binaries" / "small.stream.int8.onnx.card.json").write_text(json.dumps(card))
    profile = json.loads((run / "profile" / "p.json").read_text())
    profile["binaries"].append({"binary": str(run / "binaries" / "small.stream.int8.onnx"), "format": "onnx",
                                "streaming": True, "bytes": 1200, "peak_activation_bytes": 300,
                                "lookahead_ms": 32.0, "macs_per_frame": 1001,
                                "latency_ms": {"median": 0.02, "p99": 0.05}, "real_time_factor": 1666.0,
                                "budgets": {"wearable": {"pass": True}}})  # fmt: skip
    (run / "profile" / "p.json").write_text(json.dumps(profile))
    results = collect_results(run)
    row = next(m for m in results["models"] if m["name"] == "small.stream.int8.onnx")
    assert row["streaming"] is True and row["format"] == "onnx" and row["dtype"] == "int8"
    assert row["bytes"] == 1200 and row["macs_per_frame"] == 1001 and row["parity_max_abs"] == 0.004
    assert row["latency_ms"]["median"] == 0.02 and row["budgets"] == {"wearable": "pass"}
    write_report(run, out, results=results, preview=False)
    names = [m["name"] for m in json.loads((out / "summary.json").read_text())["models"]]
    assert "small.stream.int8.onnx" in names and "small.int8.onnx" in names
    md = (out / "REPORT.md").read_text()
    assert "## Windowed vs streaming" in md
    # streaming row, windowed twin, MACs 12345 -> 1001 (ratio 0.08109), latency 0.1 -> 0.02 ms, peak 512 -> 300
    assert (
        "| small.stream.int8.onnx | small.int8.onnx | 12,345 | 1,001 | 0.08109 | 0.1 | 0.02 | 512 | 300 |"
        in md
    )

    # without a profile the card's own MAC count (rounded up) and the pair's file bytes still fill the row
    (run / "profile" / "p.json").unlink()
    row = next(m for m in collect_results(run)["models"] if m["name"] == "small.stream.int8.onnx")
    assert row["macs_per_frame"] == 1001 and row["bytes"] == 1200 and row["streaming"] is True
