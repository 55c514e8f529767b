"""The run report: summary.json, REPORT.md and plots comparing every shipped student with the teacher.

``summary.json`` schema (every number measured in the same run; ``null`` where a stage did not measure it)::

    {"teacher": {"params": int, "bytes": int, "latency_ms": {"median", "p99"} (optional),
                 "test": {"mse", "mse_mean_baseline", "velocity_mse", "lip_closure",
                          "lip_closure_ground_truth", "jitter_ratio", "mse_per_channel" (optional)}},
     "models": [{"name": str, "preset": str, "format": "onnx" | "tflite" | "pytorch", "dtype": "fp32" | "int8" | "a16w8",
                 "pruned": bool, "streaming": bool, "bytes": int, "params": int,
                 "peak_activation_bytes": int, "lookahead_ms": float (verified on the binary when profiled),
                 "macs_per_frame": int, "parity_max_abs": float, "latency_ms": {"median", "p99"},
                 "real_time_factor": float,
                 "test": {"mse", "velocity_mse", "lip_closure", "jitter_ratio", "mse_per_channel" (optional)},
                 "budgets": {"<profile>": "pass" | "fail"}}],
     "reference": [{"name": "paper (published)", "bytes": 3400000, "lookahead_ms": 81}],
     "example": {"utterance", "fps", "channel_names", "curves": {"<label>": [[F x C]]}} (optional)}

A streaming pair is one model row (``streaming: true``, named like its card: ``tiny.stream.int8.onnx``; bytes are
step + head files, peak memory includes the state); REPORT.md compares it with its windowed twin ``tiny.int8.onnx``.
Units: bytes are file bytes, latency is per output frame on one thread, ``real_time_factor`` is audio seconds
animated per compute second, test metrics come from ``teacher.metrics.evaluate`` on the held-out test split.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from teacher.fsutil import atomic_path, atomic_write_json, atomic_write_text

PAPER_REFERENCE = {"name": "paper (published)", "bytes": 3_400_000, "lookahead_ms": 81.0}
TEST_KEYS = ("mse", "velocity_mse", "lip_closure", "jitter_ratio", "mse_per_channel")
TEACHER_TEST_KEYS = (
    "mse", "mse_mean_baseline", "velocity_mse", "lip_closure", "lip_closure_ground_truth", "jitter_ratio",
    "mse_per_channel",
)  # fmt: skip
EXAMPLE_FILE = "example.npz"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _pick(d: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    d = d or {}
    return {k: d.get(k) for k in keys if k in d or k != "mse_per_channel"}


def _test_metrics(card: dict[str, Any]) -> dict[str, Any] | None:
    return card.get("test") or card.get("quality") or (card.get("metrics") or {}).get("test")


def model_entry(card: dict[str, Any], profile: dict[str, Any] | None, *, name: str) -> dict[str, Any]:
    """One summary row from a binary's card and (optionally) its profile result."""
    profile = profile or {}
    parity = card.get("parity")
    streaming = bool(card.get("streaming") or card.get("kind") == "streaming")
    card_macs = card.get("macs_per_frame")
    if isinstance(card_macs, dict):  # streaming cards: {"streaming", "windowed", "head_runs_per_frame"}
        card_macs = math.ceil(card_macs["streaming"])
    budgets = {
        b: ("pass" if (v["pass"] if isinstance(v, dict) else v == "pass") else "fail")
        for b, v in (profile.get("budgets") or {}).items()
    }
    return {
        "name": name,
        "preset": card.get("preset"),
        "format": card.get("format") or profile.get("format") or "pytorch",
        "dtype": card.get("dtype") or profile.get("dtype") or "fp32",
        "pruned": bool(card.get("pruned", False)),
        "streaming": streaming,
        "bytes": profile.get("bytes") or card.get("bytes"),
        "params": card.get("params"),
        "peak_activation_bytes": profile.get("peak_activation_bytes"),
        "lookahead_ms": profile.get("lookahead_ms", card.get("lookahead_ms")),
        "macs_per_frame": profile.get("macs_per_frame") or card_macs,
        "parity_max_abs": parity.get("max_abs_diff", parity.get("max_abs"))
        if isinstance(parity, dict)
        else parity,
        "latency_ms": profile.get("latency_ms"),
        "real_time_factor": profile.get("real_time_factor"),
        "test": _pick(_test_metrics(card) or profile.get("test"), TEST_KEYS),
        "budgets": budgets,
    }


def _profiles_by_binary(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Profile results under run_dir/profile/*.json (single results or `compress profile --json` files)."""
    out = {}
    for path in sorted((run_dir / "profile").glob("*.json")):
        data = _read_json(path)
        for result in data.get("binaries", [data]):
            if "binary" in result:
                out[Path(result["binary"]).name] = result
    return out


def load_example(path: str | os.PathLike) -> dict[str, Any]:
    """An example utterance saved by ``save_example`` (audio, fps, channel names, curves by label)."""
    with np.load(path, allow_pickle=False) as z:
        curves = {k[len("curves/") :]: z[k] for k in z.files if k.startswith("curves/")}
        return {
            "utterance": str(z["utterance"]),
            "fps": int(z["fps"]),
            "channel_names": [str(c) for c in z["channel_names"]],
            "audio": z["audio"] if "audio" in z.files else None,
            "curves": curves,
        }


def save_example(
    path: str | os.PathLike,
    *,
    utterance: str,
    audio: np.ndarray,
    fps: int,
    channel_names: list[str],
    curves_by_label: dict[str, np.ndarray],
) -> None:
    """Store one test utterance's audio and curves (teacher, students, ground truth) for the report and preview."""
    arrays = {f"curves/{label}": np.asarray(c, np.float32) for label, c in curves_by_label.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            utterance=np.array(utterance),
            audio=np.asarray(audio, np.float32),
            fps=np.array(fps),
            channel_names=np.array(channel_names),
            **arrays,
        )


# the folders `compress run` keeps its teachers and labels in; round 2 is --self-train's (compress.pipeline)
TEACHER_DIR, ROUND2_TEACHER_DIR, ROUND2_PSEUDO_DIR = "teacher", "teacher2", "pseudo2"


def teacher_folder(run_dir: str | os.PathLike) -> Path:
    """The teacher the run's students learned from: ``teacher2/`` when its run config self-trained, else
    ``teacher/``."""
    run_dir = Path(run_dir)
    saved = run_dir / "run_config.json"
    self_trained = saved.is_file() and (_read_json(saved).get("self_train_epochs") or 0) > 0
    return run_dir / (ROUND2_TEACHER_DIR if self_trained else TEACHER_DIR)


def collect_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Gather the summary from disk: the teacher's teacher.json (``teacher_folder``), binaries/*.card.json,
    profile/*.json, example.npz.

    Every binary with a card becomes a model row; its profile (matched by file name) adds the measured columns. A
    streaming pair is one row named like its card (``tiny.stream.int8.onnx``), as ``compress profile`` names it.
    """
    run_dir = Path(run_dir)
    teacher: dict[str, Any] = {}
    tdir = teacher_folder(run_dir)
    tcard_path = tdir / "teacher.json"
    if tcard_path.exists():
        tcard = _read_json(tcard_path)
        weights = tdir / tcard.get("artifact", "teacher.pt")
        teacher = {
            "params": tcard.get("params", tcard.get("decoder_params")),
            "bytes": tcard.get("bytes", weights.stat().st_size if weights.exists() else None),
            "test": _pick((tcard.get("metrics") or {}).get("test"), TEACHER_TEST_KEYS),
        }
        if tcard.get("latency_ms"):
            teacher["latency_ms"] = tcard["latency_ms"]
    profiles = _profiles_by_binary(run_dir)
    models = []
    for card_file in sorted((run_dir / "binaries").glob("*.card.json")):
        card = _read_json(card_file)
        binary = card_file.with_name(card_file.name[: -len(".card.json")])  # name.int8.onnx.card.json
        profile = profiles.get(binary.name)
        if card.get("bytes") is None and card.get("kind") == "streaming":  # a pair: step + head files
            card = {**card, "bytes": sum(g["file_bytes"] for g in card["graphs"].values())}
        elif card.get("bytes") is None:
            card = {**card, "bytes": binary.stat().st_size if binary.exists() else card.get("file_bytes")}
        models.append(model_entry(card, profile, name=binary.name))
    results: dict[str, Any] = {"teacher": teacher, "models": models, "reference": [PAPER_REFERENCE]}
    if (run_dir / EXAMPLE_FILE).exists():
        results["example"] = load_example(run_dir / EXAMPLE_FILE)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def streaming_comparison(models: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(streaming row, windowed row) for each streaming binary whose windowed twin is in the run.

    Twins share a name but for ``.stream``: ``tiny.stream.int8.onnx`` <-> ``tiny.int8.onnx``.
    """
    windowed = {m["name"]: m for m in models if not m.get("streaming")}
    return [
        (m, windowed[m["name"].replace(".stream.", ".", 1)])
        for m in models
        if m.get("streaming") and m["name"].replace(".stream.", ".", 1) in windowed
    ]


def render_markdown(results: dict[str, Any], plots: list[str]) -> str:
    teacher, models = results.get("teacher") or {}, results.get("models") or []
    tt = teacher.get("test") or {}
    out = ["# facedistill report", ""]
    out += [
        "Every number below was measured in this run (latency: one thread of the machine that ran "
        "`compress profile`; lookahead: verified on each binary by perturbing future samples). The paper's "
        "published figures are reference rows, not our measurements.",
        "",
        "## Teacher",
        "",
        _table(
            [
                "params",
                "bytes",
                "test MSE",
                "mean-predictor MSE",
                "velocity MSE",
                "lip closure",
                "lip closure (truth)",
                "jitter ratio",
            ],
            [
                [
                    teacher.get("params"),
                    teacher.get("bytes"),
                    tt.get("mse"),
                    tt.get("mse_mean_baseline"),
                    tt.get("velocity_mse"),
                    tt.get("lip_closure"),
                    tt.get("lip_closure_ground_truth"),
                    tt.get("jitter_ratio"),
                ]
            ],
        ),  # fmt: skip
        "",
        "## Students",
        "",
    ]
    budget_names = sorted({b for m in models for b in m.get("budgets", {})})
    header = ["model", "format", "dtype", "pruned", "streaming", "bytes", "params", "peak act. bytes",
              "lookahead ms", "MACs/frame", "parity max abs", "latency ms (median / p99)", "RTF", "test MSE",
              "velocity MSE", "lip closure", "jitter ratio"] + budget_names  # fmt: skip
    rows = []
    for m in models:
        t, lat = m.get("test") or {}, m.get("latency_ms") or {}
        latency = f"{_f(lat.get('median'), 3)} / {_f(lat.get('p99'), 3)}" if lat else None
        rows.append(
            [m["name"], m["format"], m["dtype"], m["pruned"], m["streaming"], m.get("bytes"), m.get("params"),
             m.get("peak_activation_bytes"), m.get("lookahead_ms"), m.get("macs_per_frame"),
             m.get("parity_max_abs"), latency, m.get("real_time_factor"), t.get("mse"), t.get("velocity_mse"),
             t.get("lip_closure"), t.get("jitter_ratio")]
            + [m.get("budgets", {}).get(b, "—") for b in budget_names]
        )  # fmt: skip
    for ref in results.get("reference") or []:
        rows.append([ref["name"], "—", "—", None, None, ref.get("bytes"), None, None, ref.get("lookahead_ms")]
                    + [None] * (len(header) - 9))  # fmt: skip
    out += [_table(header, rows), ""]
    out += ["## Against the teacher (same run)", ""]
    ratio_rows = []
    t_lat = (teacher.get("latency_ms") or {}).get("median")
    for m in models:
        t = m.get("test") or {}
        lat = (m.get("latency_ms") or {}).get("median")
        closure = t.get("lip_closure")
        ratio_rows.append(
            [m["name"], _ratio(teacher.get("bytes"), m.get("bytes")), _ratio(t_lat, lat),
             _ratio(t.get("mse"), tt.get("mse")), _ratio(t.get("mse"), tt.get("mse_mean_baseline")),
             None if closure is None or tt.get("lip_closure") is None else closure - tt["lip_closure"]]
        )  # fmt: skip
    out += [
        _table(["model", "smaller than teacher (x)", "faster than teacher (x)", "MSE / teacher MSE",
                "MSE / mean-predictor MSE", "lip closure − teacher"], ratio_rows),
        "",
    ]  # fmt: skip
    pairs = streaming_comparison(models)
    if pairs:
        out += [
            "## Windowed vs streaming (same student, format and dtype)",
            "",
            "Streaming feeds the encoder blocks of 64-sample cells (one step call per block) and keeps its state; "
            "a frame costs the step calls of its cells plus its head calls. Latency is per frame on one thread; "
            "peak memory of a pair includes its state tensors.",
            "",
            _table(
                ["streaming model", "windowed model", "MACs/frame windowed", "MACs/frame streaming",
                 "MACs ratio (streaming / windowed)", "latency ms windowed", "latency ms streaming",
                 "peak act. bytes windowed", "peak act. bytes streaming", "lookahead ms windowed",
                 "lookahead ms streaming"],
                [[s["name"], w["name"], w.get("macs_per_frame"), s.get("macs_per_frame"),
                  _ratio(s.get("macs_per_frame"), w.get("macs_per_frame")),
                  (w.get("latency_ms") or {}).get("median"), (s.get("latency_ms") or {}).get("median"),
                  w.get("peak_activation_bytes"), s.get("peak_activation_bytes"), w.get("lookahead_ms"),
                  s.get("lookahead_ms")] for s, w in pairs],
            ),
            "",
        ]  # fmt: skip
    out += _run_section(results.get("run"))
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)


def _run_section(run: dict[str, Any] | None) -> list[str]:
    """Binaries the parity gate refused, the teacher on every evaluated split, and stage timings."""
    if not run:
        return []
    out: list[str] = []
    refused = run.get("refused_binaries") or []
    if refused:
        out += ["## Refused by the parity / dtype gate (not written)", ""]
        out += [
            _table(
                ["binary", "layers tried in float", "error"],
                [[r["binary"], ", ".join(r.get("keep_float") or []) or "none", r["error"]] for r in refused],
            ),
            "",
        ]
    evals = run.get("teacher_eval") or {}
    if evals:
        out += ["## Teacher on every evaluated split", ""]
        keys = [
            "mse",
            "mse_ratio_to_mean",
            "velocity_mse",
            "lip_closure",
            "lip_closure_ground_truth",
            "jitter_ratio",
        ]
        out += [_table(["split", *keys], [[k, *[m.get(x) for x in keys]] for k, m in evals.items()]), ""]
    if run.get("stage_seconds"):
        out += ["## Run", ""]
        stages = run["stage_seconds"]
        out += [
            _table(
                ["stage", "seconds"],
                [[k, v] for k, v in stages.items()] + [["total", run.get("total_seconds")]],
            )
        ]
        out += [""]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (lower is better on both), sorted by x."""
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def _savefig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _plot_front(results: dict[str, Any], key: str, xlabel: str, path: Path, *, logx: bool) -> bool:
    import matplotlib.pyplot as plt

    pts = [
        (float(m[key]), float(m["test"]["mse"]), m["name"])
        for m in results.get("models", [])
        if m.get(key) is not None and (m.get("test") or {}).get("mse") is not None
    ]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", label="students")
    for x, y, name in pts:
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = _pareto([(x, y) for x, y, _ in pts])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:blue", alpha=0.5,
            label="Pareto front")  # fmt: skip
    teacher = results.get("teacher") or {}
    tt = teacher.get("test") or {}
    if tt.get("mse") is not None:
        ax.axhline(tt["mse"], color="tab:green", ls="--", label="teacher MSE")
    if tt.get("mse_mean_baseline") is not None:
        ax.axhline(tt["mse_mean_baseline"], color="gray", ls=":", label="predict-the-mean MSE")
    ref = PAPER_REFERENCE.get(key)
    if ref is not None:
        ax.axvline(ref, color="tab:red", ls="--", label=f"paper: {ref:g}")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test MSE (lower is better)")
    ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)
    return True


def _plot_channels(results: dict[str, Any], path: Path, top: int = 20) -> bool:
    import matplotlib.pyplot as plt

    series = {}
    tpc = ((results.get("teacher") or {}).get("test") or {}).get("mse_per_channel")
    if tpc:
        series["teacher"] = tpc
    for m in results.get("models", []):
        pc = (m.get("test") or {}).get("mse_per_channel")
        if pc:
            series[m["name"]] = pc
    if not series:
        return False
    ref = next(iter(series.values()))
    channels = sorted(ref, key=lambda c: -max(s.get(c, 0.0) for s in series.values()))[:top]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(series)
    for k, (label, pc) in enumerate(series.items()):
        ax.bar(
            np.arange(len(channels)) + k * width, [pc.get(c, np.nan) for c in channels], width, label=label
        )
    ax.set_xticks(np.arange(len(channels)) + 0.4 - width / 2, channels, rotation=70, fontsize=7)
    ax.set_ylabel("test MSE per channel")
    ax.set_title(f"{len(channels)} channels with the largest error")
    ax.legend(fontsize=7)
    _savefig(fig, path)
    plt.close(fig)
    return True


EXAMPLE_CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker")


def _plot_example(example: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt

    names = list(example["channel_names"])
    shown = [c for c in EXAMPLE_CHANNELS if c in names] or names[:4]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.8 * len(shown)), sharex=True, squeeze=False)
    for ax, ch in zip(axes[:, 0], shown):
        for label, curves in example["curves"].items():
            curves = np.asarray(curves)
            t = np.arange(len(curves)) / example["fps"]
            ax.plot(t, curves[:, names.index(ch)], label=label, lw=1.2)
        ax.set_ylabel(ch, fontsize=8)
    axes[0, 0].set_title(f"utterance {example['utterance']}")
    axes[0, 0].legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("seconds")
    _savefig(fig, path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------------------------


def _json_summary(results: dict[str, Any]) -> dict[str, Any]:
    summary = {k: v for k, v in results.items() if k != "example"}
    if "example" in results:
        ex = results["example"]
        summary["example"] = {
            "utterance": ex["utterance"],
            "fps": ex["fps"],
            "channel_names": list(ex["channel_names"]),
            "curves": {k: np.asarray(v).round(5).tolist() for k, v in ex["curves"].items()},
        }
    return summary


def write_report(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, results: dict[str, Any], preview: bool = True
) -> list[Path]:
    """Write summary.json, REPORT.md and PNG plots (and preview.mp4 when an example with audio is present).

    ``results`` follows the schema in this module's docstring (``collect_results(run_dir)`` builds it from disk).
    Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "run_dir": str(run_dir)}
    results.setdefault("reference", [PAPER_REFERENCE])
    written, plots = [], []
    if _plot_front(results, "bytes", "binary size (bytes)", out / "size_vs_quality.png", logx=True):
        plots.append(out / "size_vs_quality.png")
    if _plot_front(results, "lookahead_ms", "lookahead (ms of future audio)", out / "lookahead_vs_quality.png",
                   logx=False):  # fmt: skip
        plots.append(out / "lookahead_vs_quality.png")
    if _plot_channels(results, out / "per_channel_error.png"):
        plots.append(out / "per_channel_error.png")
    example = results.get("example")
    if example and _plot_example(example, out / "example_curves.png"):
        plots.append(out / "example_curves.png")
    if preview and example is not None and example.get("audio") is not None:
        from compress.render import render_preview

        render_preview(example["audio"], example["curves"], example["fps"], out / "preview.mp4",
                       channel_names=example["channel_names"])  # fmt: skip
        written.append(out / "preview.mp4")
    atomic_write_json(out / "summary.json", _json_summary(results))
    atomic_write_text(out / "REPORT.md", render_markdown(results, [str(p) for p in plots]))
    return [out / "summary.json", out / "REPORT.md", *plots, *written]
