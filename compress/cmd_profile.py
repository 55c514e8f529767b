"""`compress profile` (measure binaries against device budgets, a CI gate) and `compress report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from compress.budgets import DEFAULT_BUDGETS, LIMITS, Budget, check, load_budgets, select_budgets
from compress.cliargs import comma_list
from compress.profile import ProfileConfig, profile_binary, streaming_card_path
from teacher.fsutil import atomic_write_json

PROFILE_HELP = """\
Measure each binary (.onnx or .tflite, with its <binary>.card.json beside it) on one thread: file and weight bytes,
peak activation memory from tensor lifetimes, runtime resident memory, lookahead re-verified by perturbing
future samples, MACs per frame, latency median/p99 per frame and real-time factor. A streaming pair
(name.stream.<dtype>.step/.head.<format>, from `export_streaming`) is one model: name either file or its
name.stream.<dtype>.<format>.card.json and it is profiled once, running the card's host loop (a frame costs its
cells' step calls plus its head calls; peak memory includes the state tensors). With --budget, each measure
is checked against the named device budgets; the exit status is 1 when any binary is over any budget, so the
command works as a CI gate:

  compress profile runs/default/binaries/*.onnx --budget mobile,wearable --json profile.json
  compress profile student.tflite --budgets my_budgets.toml --budget watch
  compress profile runs/default/binaries/tiny.stream.a16w8.onnx.card.json --budget wearable
"""

# (label, measure in the result) in table order
ROWS: list[tuple[str, str]] = [
    ("bytes", "bytes"),
    ("weight bytes", "weight_bytes"),
    ("peak activation bytes", "peak_activation_bytes"),
    ("state bytes (streaming)", "state_bytes"),
    ("runtime RSS growth bytes", "runtime_rss_bytes"),
    ("lookahead ms (verified)", "lookahead_ms"),
    ("lookahead ms (card)", "lookahead_ms_card"),
    ("MACs per frame", "macs_per_frame"),
    ("latency ms median", "latency_ms.median"),
    ("latency ms p99", "latency_ms.p99"),
    ("real-time factor", "real_time_factor"),
    ("test MSE", "test.mse"),
    ("test lip closure", "test.lip_closure"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure binaries against device budgets (exit 1 when over budget)",
        description=PROFILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "binaries",
        nargs="+",
        metavar="BINARY",
        help=".onnx or .tflite files to measure (a streaming pair: either file or its .card.json; "
        "each model is profiled once)",
    )
    p.add_argument(
        "--budget",
        default="",
        help="comma-separated budget names to check, e.g. mobile,wearable (shipped: paper-tiny, mobile, wearable)",
    )
    p.add_argument(
        "--budgets",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"budget TOML file (default {DEFAULT_BUDGETS})",
    )
    p.add_argument(
        "--json", type=Path, default=None, metavar="OUT", help="write every measure and check as JSON"
    )
    p.add_argument(
        "--runs", type=int, default=1000, help="timed runs per binary after warm-up (default 1000)"
    )
    p.add_argument("--warmup", type=int, default=50, help="untimed warm-up runs (default 50)")
    p.set_defaults(handler=run_profile)

    r = subparsers.add_parser(
        "report",
        help="write REPORT.md, summary.json and plots from a pipeline run",
        description="Gather the cards and profiles under a run folder and write reports/REPORT.md, "
        "reports/summary.json and PNG plots (size/lookahead vs quality, per-channel errors, example curves).",
    )
    r.add_argument(
        "--run", type=Path, default=Path("runs/default"), help="pipeline run folder (default runs/default)"
    )
    r.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports)")
    r.set_defaults(handler=run_report)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    value = float(value)
    if value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _get(result: dict[str, Any], measure: str) -> Any:
    value: Any = result
    for part in measure.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def format_table(result: dict[str, Any], budgets: list[Budget]) -> str:
    """A readable table: one row per measure, its value, then each budget's limit and PASS/FAIL."""
    checks = {b.name: {m: (limit, p) for m, _, limit, p in check(result, b)} for b in budgets}
    header = ["measure", "value"] + [f"{b.name} limit" for b in budgets] + [b.name for b in budgets]
    lines = [header]
    for label, measure in ROWS:
        value = _get(result, measure)
        limited = any(measure in checks[b.name] for b in budgets)
        if value is None and not limited:
            continue
        row = [label, _fmt(value)]
        marks = []
        for b in budgets:
            limit, passed = checks[b.name].get(measure, (None, None))
            kind = "" if limit is None else ("<= " if _kind(b, measure) == "max" else ">= ")
            row.append("" if limit is None else kind + _fmt(limit))
            marks.append("" if limit is None else {True: "PASS", False: "FAIL", None: "not checked"}[passed])
        lines.append(row + marks)
    widths = [max(len(r[k]) for r in lines) for k in range(len(header))]
    text = [f"{result['binary']} ({result['format']}, {result.get('dtype') or 'dtype?'})"]
    for r in lines:
        text.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if result.get("lookahead_mismatch"):
        text.append(
            f"  WARNING: verified lookahead {result['lookahead_ms']:.4g} ms differs from the card's "
            f"{result['lookahead_ms_card']:.4g} ms"
        )
    if result.get("lookahead_note"):
        text.append(f"  note: {result['lookahead_note']}")
    return "\n".join(text)


def _kind(budget: Budget, measure: str) -> str:
    for key in budget.limits:
        if LIMITS[key][0] == measure:
            return LIMITS[key][1]
    return "max"


def unique_models(paths: list[str]) -> list[str]:
    """One entry per model, in order: both files of a streaming pair (and its card) collapse to the card."""
    seen, out = set(), []
    for p in paths:
        pair = streaming_card_path(p)
        key = str(pair) if pair is not None else p
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def run_profile(args: argparse.Namespace) -> int:
    source = args.budgets or DEFAULT_BUDGETS
    names = comma_list(args.budget)
    budgets = select_budgets(load_budgets(source), names, source) if names or args.budgets else []
    config = ProfileConfig(runs=args.runs, warmup=args.warmup)
    results, failed = [], []
    for binary in unique_models(args.binaries):
        result = profile_binary(binary, config=config)
        result["budgets"] = {}
        for b in budgets:
            rows = check(result, b)
            ok = all(p is not False for *_, p in rows)
            result["budgets"][b.name] = {
                "pass": ok,
                "checks": [{"measure": m, "value": v, "limit": lim, "pass": p} for m, v, lim, p in rows],
            }
            if not ok:
                failed.append(f"{binary} over {b.name}")
        results.append(result)
        print(format_table(result, budgets))
        print()
    if args.json:
        atomic_write_json(args.json, {"budgets_file": str(source), "binaries": results})
        print(f"wrote {args.json}")
    if failed:
        print("FAIL: " + "; ".join(failed), file=sys.stderr)
        return 1
    if budgets:
        print(f"PASS: {len(results)} binaries within {', '.join(b.name for b in budgets)}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from compress.report import collect_results, write_report

    results = collect_results(args.run)
    paths = write_report(args.run, args.out, results=results)
    for p in paths:
        print(f"wrote {p}")
    return 0
