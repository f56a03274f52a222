"""How much host memory decoding may take: the decoded cache and source files alike.

The budget is half of the memory free right now, so the decoded arrays and a copy fit, and
the figure comes from the same place for `data.cache: memory` and `stride data prepare`.
A source file's decoded size is known from its header before anything is inflated: one
that exceeds the budget (a few kilobytes can claim gigabytes) is refused, naming the sizes.
"""

from __future__ import annotations

from stride.errors import StrideError


def host_budget_bytes() -> int:
    """Half of the host memory available now."""
    import psutil

    return psutil.virtual_memory().available // 2


def check_fits(where: str, needed_bytes: int, what: str, budget_bytes: int | None = None) -> None:
    """Refuse `needed_bytes` of decoded data (`what`, e.g. `X 32 x 32 x 3 x 400000`) beyond the budget."""
    budget = host_budget_bytes() if budget_bytes is None else budget_bytes
    if needed_bytes > budget:
        raise StrideError(f"{where}: decoding {what} needs {needed_bytes / 2**20:,.1f} MiB of memory, more than the "
                          f"budget of {budget / 2**20:,.1f} MiB (half the memory free now); the file is damaged or "
                          "forged, or needs a machine with more memory")
