"""What the person at the terminal reads: short status lines on stderr, results on stdout.

A run spends its first seconds composing the config, importing the libraries, loading the
data and building the model; a line for each says that it is working and on what. They go
to stderr with the progress bars, so that ``sweeplab train … > file`` captures the results
alone. Only the main process (rank 0) writes them.
"""

from __future__ import annotations

import os
import sys

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero() -> bool:
    """Rank from the launcher's environment, as Lightning reads it, without importing torch."""
    for key in RANK_VARIABLES:
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


STATUS_PREFIX = "[sweeplab] "


def status(message: str) -> None:
    """One short line on stderr (rank 0 only), shown at once. Its prefix sets it apart from
    the one ``sweeplab: …`` line that reports an error."""
    if is_rank_zero():
        print(f"{STATUS_PREFIX}{message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 05 s`` or ``2 h 04 min``: a wall time as people read it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
