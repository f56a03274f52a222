"""Plain-text tables for terminals: the one column-aligned renderer the commands share."""

from __future__ import annotations

from collections.abc import Sequence


def align_columns(rows: Sequence[Sequence[str]], gap: str = "  ") -> str:
    """Left-align every column but the last (which may be long and ragged); first row is the header."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(gap.join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)
