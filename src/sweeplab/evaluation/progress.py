"""Evaluation phases as they happen: a progress bar per phase on stderr, and its wall time.

Evaluation runs many passes after training (the splits, each OOD set, every corruption,
ODIN's input gradients, the detectors); without a bar a long one looks like a hang. Each
phase's time goes to the log and to the record as ``perf/eval/<phase>_s`` (with
``perf/eval/total_s``), so that a slow phase can be found, and sized, afterwards.
Bars go to stderr, so that stdout keeps only results.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("sweeplab.eval")

PERF_PREFIX = "perf/eval/"


def phase_key(phase: str) -> str:
    """The record's metric key of a phase's wall time: ``perf/eval/<phase>_s``."""
    return f"{PERF_PREFIX}{phase}_s"


class EvalProgress:
    """Shows each phase of one evaluation as a bar and keeps the seconds it took.

    Args:
        show: draw the bars (stderr); the times are kept and logged either way.
    """

    def __init__(self, show: bool = True) -> None:
        self.show = show
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "img") -> Iterator[Any]:
        """A bar named ``eval <name>`` counting ``total`` ``unit``s; times the block.

        Without ``total`` the phase is one step, done when the block ends. A phase
        entered twice adds up its times.
        """
        from tqdm.auto import tqdm

        one_step = total is None
        bar = tqdm(
            total=1 if one_step else total,
            desc=f"eval {name}",
            unit=unit,
            file=sys.stderr,
            disable=not self.show,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        start = time.perf_counter()
        try:
            yield bar
            if one_step:
                bar.update(1)
        finally:
            bar.close()
            seconds = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            log.info("eval %s: %.1f s", name, seconds)

    def metrics(self) -> dict[str, float]:
        """``perf/eval/<phase>_s`` for every phase so far, and ``perf/eval/total_s``."""
        metrics = {phase_key(name): round(s, 3) for name, s in self.seconds.items()}
        metrics[phase_key("total")] = round(time.perf_counter() - self._started, 3)
        return metrics


def counted(batches: Iterable[tuple[Any, Any]], bar) -> Iterator[tuple[Any, Any]]:
    """``batches`` unchanged, advancing ``bar`` by each batch's number of samples."""
    for x, y in batches:
        yield x, y
        bar.update(len(y))


def advancing(items: Iterable[Any], bar) -> Iterator[Any]:
    """``items`` unchanged, naming each on ``bar`` while it is worked on and advancing
    ``bar`` by one once it is done; no ``bar``, no drawing."""
    for item in items:
        if bar is not None:
            bar.set_postfix_str(str(item))
        yield item
        if bar is not None:
            bar.update(1)


def sample_count(batches: Any) -> int | None:
    """How many samples a split's loader yields (its batch plan's), if it says."""
    plan = getattr(batches, "plan", None)
    count = getattr(plan, "num_samples", None)
    return int(count) if count is not None else None
