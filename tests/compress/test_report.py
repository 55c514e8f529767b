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
