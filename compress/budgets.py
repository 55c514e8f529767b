"""Device budgets: named limits a profiled binary must meet (size, memory, lookahead, latency, quality).

Budgets live in a TOML file with one table per device profile (the shipped ``compress/budgets.toml`` holds
``paper-tiny``, ``mobile`` and ``wearable``); users pass their own with ``--budgets FILE``. Each key is either
``max_<measure>`` or ``min_<measure>`` (see ``LIMITS``); unknown keys, wrong types and negative values are
refused with a one-line error naming the file and the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teacher.errors import FacedistillError

DEFAULT_BUDGETS = Path(__file__).with_name("budgets.toml")

# budget key -> (measure in a profile result, "max" or "min"); quality measures live under result["test"].
LIMITS: dict[str, tuple[str, str]] = {
    "max_bytes": ("bytes", "max"),
    "max_peak_activation_bytes": ("peak_activation_bytes", "max"),
    "max_runtime_rss_bytes": ("runtime_rss_bytes", "max"),
    "max_lookahead_ms": ("lookahead_ms", "max"),
    "max_macs_per_frame": ("macs_per_frame", "max"),
    "max_latency_ms_p99": ("latency_ms.p99", "max"),
    "min_real_time_factor": ("real_time_factor", "min"),
    "max_test_mse": ("test.mse", "max"),
    "min_lip_closure": ("test.lip_closure", "min"),
}
QUALITY_MEASURES = frozenset({"test.mse", "test.lip_closure"})


class BudgetError(FacedistillError):
    """A budget file or a budget name that cannot be used."""


@dataclass(frozen=True)
class Budget:
    name: str
    limits: dict[str, float]  # budget key -> limit
    description: str = ""


def load_budgets(path: str | os.PathLike | None = None) -> dict[str, Budget]:
    """Read and validate a budget file (the shipped one when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_BUDGETS
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        msg = f"{path}: no such budget file"
        raise BudgetError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML ({exc})"
        raise BudgetError(msg) from exc
    budgets = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            msg = f"{path}: top-level key {name!r} must be a [table] of limits, got {type(table).__name__}"
            raise BudgetError(msg)
        limits, description = {}, ""
        for key, value in table.items():
            where = f"{path}: [{name}] {key}"
            if key == "description":
                if not isinstance(value, str):
                    msg = f"{where}: must be a string"
                    raise BudgetError(msg)
                description = value
                continue
            if key not in LIMITS:
                msg = f"{where}: unknown key (known: description, {', '.join(LIMITS)})"
                raise BudgetError(msg)
            if isinstance(value, bool) or not isinstance(value, int | float):
                msg = f"{where}: must be a number, got {type(value).__name__} {value!r}"
                raise BudgetError(msg)
            if value < 0:
                msg = f"{where}: must not be negative, got {value}"
                raise BudgetError(msg)
            limits[key] = value
        budgets[name] = Budget(name, limits, description)
    return budgets


def select_budgets(budgets: dict[str, Budget], names: list[str], source: str | os.PathLike) -> list[Budget]:
    """The named budgets, refusing names the file does not define."""
    out = []
    for name in names:
        if name not in budgets:
            msg = f"{source}: no budget named {name!r} (defined: {', '.join(budgets) or 'none'})"
            raise BudgetError(msg)
        out.append(budgets[name])
    return out


def measure_value(result: dict[str, Any], measure: str) -> float | None:
    """A measure of a profile result by dotted name (``latency_ms.p99``); None when it was not measured."""
    value: Any = result
    for part in measure.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        value = value[part]
    return float(value)


def check(result: dict[str, Any], budget: Budget) -> list[tuple[str, float | None, float, bool | None]]:
    """(measure, value, limit, passed) for every limit of ``budget``.

    ``passed`` is None only for a quality limit when the binary's card has no test metrics (not checked). A
    binary measure that is missing (e.g. lookahead of a model that ignores its input) fails.
    """
    rows = []
    for key, limit in budget.limits.items():
        measure, kind = LIMITS[key]
        value = measure_value(result, measure)
        if value is None:
            rows.append((measure, None, limit, None if measure in QUALITY_MEASURES else False))
            continue
        passed = value <= limit + 1e-9 if kind == "max" else value >= limit - 1e-9
        rows.append((measure, value, limit, passed))
    return rows


def passes(result: dict[str, Any], budget: Budget) -> bool:
    return all(p is not False for *_, p in check(result, budget))
