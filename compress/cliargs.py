"""Argument parsing shared by the `compress` subcommands."""

from __future__ import annotations


def comma_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: the items of a comma-separated option, blanks dropped (None -> [])."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]
