"""The difference between two runs' resolved configs, key by key.

Two runs that look alike in the runs table may still differ somewhere deep in
their configs (an optimizer's momentum, a data split's seed). The diff flattens
both configs to dotted keys, keeps the keys whose values differ (or that only one
run has) and says of each whether it can change results, so a difference in
``paths.*`` or a logger is told apart from one that explains a gap in accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from sweeplab.dashboard.tables import display
from sweeplab.tracking.identity import changes_metrics

ABSENT = "(absent)"
COLUMNS = ["key", "a", "b", "changes results"]


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are leaves, as an override writes them."""
    if not isinstance(config, Mapping) or (prefix and not config):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], *, all_keys: bool = False):
    """The keys where configs ``a`` and ``b`` differ, result-changing keys first.

    Columns: ``key``, the value in ``a`` and in ``b`` (as the runs table writes values;
    ``(absent)`` where a config lacks the key) and ``changes results``.
    ``all_keys`` also lists the keys that change no metric.
    """
    flat_a, flat_b = flatten(dict(a)), flatten(dict(b))
    rows = []
    for key in sorted(flat_a.keys() | flat_b.keys()):
        left = display(flat_a[key]) if key in flat_a else ABSENT
        right = display(flat_b[key]) if key in flat_b else ABSENT
        if left == right:
            continue
        matters = changes_metrics(key) and not key.startswith("hydra")
        if matters or all_keys:
            rows.append({"key": key, "a": left, "b": right, "changes results": matters})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values("changes results", ascending=False, kind="stable", ignore_index=True)
