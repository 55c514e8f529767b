"""Budgets: the shipped file loads, limits are checked, malformed files give one clear line."""

from __future__ import annotations

import pytest

from compress.budgets import BudgetError, check, load_budgets, passes, select_budgets


def test_shipped_budgets():
    budgets = load_budgets()
    assert {"paper-tiny", "mobile", "wearable"} <= set(budgets)
    assert budgets["paper-tiny"].limits == {"max_bytes": 3_400_000, "max_lookahead_ms": 81}
    assert budgets["wearable"].limits["max_bytes"] < budgets["mobile"].limits["max_bytes"]


def test_check_pass_fail_and_quality_only_when_measured():
    budgets = load_budgets()
    result = {"bytes": 500_000, "lookahead_ms": 40.0, "latency_ms": {"median": 0.1, "p99": 0.2}}
    assert passes(result, budgets["mobile"])
    rows = check(result, budgets["wearable"])
    assert ("bytes", 500_000.0, 256_000, False) in rows
    assert ("lookahead_ms", 40.0, 32, False) in rows
    assert not passes(result, budgets["wearable"])


def test_user_budget_with_quality_and_min_limits(tmp_path):
    f = tmp_path / "b.toml"
    f.write_text(
        '[watch]\ndescription = "x"\nmin_real_time_factor = 100\nmax_test_mse = 0.01\nmin_lip_closure = 0.9\n'
    )
    watch = load_budgets(f)["watch"]
    result = {"real_time_factor": 50.0}
    rows = {m: p for m, _, _, p in check(result, watch)}
    assert rows == {"real_time_factor": False, "test.mse": None, "test.lip_closure": None}
    result = {"real_time_factor": 500.0, "test": {"mse": 0.005, "lip_closure": 0.95}}
    assert passes(result, watch)
    result["test"]["lip_closure"] = 0.5
    assert not passes(result, watch)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[a]\nmax_bytez = 1\n", "[a] max_bytez: unknown key"),
        ('[a]\nmax_bytes = "1 MB"\n', "[a] max_bytes: must be a number"),
        ("[a]\nmax_bytes = true\n", "[a] max_bytes: must be a number"),
        ("[a]\nmax_lookahead_ms = -3\n", "[a] max_lookahead_ms: must not be negative"),
        ("max_bytes = 3\n", "top-level key 'max_bytes' must be a [table]"),
        ("[a\n", "not valid TOML"),
    ],
)
def test_malformed_files_name_file_and_key(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(BudgetError) as exc:
        load_budgets(f)
    msg = str(exc.value)
    assert msg.startswith(str(f)) and needle in msg and "\n" not in msg


def test_unknown_budget_name():
    with pytest.raises(BudgetError, match="no budget named 'phone'"):
        select_budgets(load_budgets(), ["phone"], "budgets.toml")
