"""The ``sweeplab`` command: dispatch to the apps.

sweeplab train [overrides…]          one run; with -m, a sweep
sweeplab search hparams_search=<p>   an Optuna study whose trials are runs (resumable)
sweeplab eval run=<dir|id> [eval…]   re-evaluate a finished run from its eval cache
sweeplab runs [filters]              list the run store
sweeplab table SPEC [--launch]       render a paper table from the run store
sweeplab dashboard [--port]          browse the run store in a local web app
sweeplab sync [--runs-dir]           upload the store's offline W&B runs
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from sweeplab import disk_faults
from sweeplab.tracking.layout import RUNS_DIR_RULE

USAGE = f"""usage: sweeplab <command> [args…]

commands:
  train [overrides…]     train and evaluate one run (with -m: a sweep over overrides)
  search hparams_search=<preset> …  an Optuna search, continued on relaunch (sweeplab search --help)
  eval run=<dir|id> …    re-evaluate a finished run from its eval cache (sweeplab eval --help)
  publish run=<dir|id> logger=wandb|tensorboard  send a finished run to a logger (--help)
  nas search|rank run=<supernet run> …  search a supernet under a budget, or check its ranking
  runs [filters…]        list the run store as a table (sweeplab runs --help)
  dashboard [--port]     browse the run store on http://127.0.0.1:8501 (sweeplab dashboard --help)
  sync [--runs-dir]      upload the store's offline W&B runs (sweeplab sync --help)
  table SPEC [--launch]  render a paper table spec, launching missing runs (sweeplab table --help)

  sweeplab train --help  shows the config groups and their options

The run store every command reads and writes: --runs-dir (for train and eval:
paths.runs_dir=…), else {RUNS_DIR_RULE}.
"""


def _train(args: list[str]) -> int:
    from sweeplab.console import status

    if not any(arg.startswith("--") or arg == "-h" for arg in args):  # --help, --cfg, --info
        status("composing the config")
    from sweeplab import train
    from sweeplab.tracking import sweeps

    sys.argv = [sys.argv[0], *args]
    sweeps.LAST_SWEEP = None
    if "--help" in args or "-h" in args:
        return _train_help()
    try:
        _run_hydra_app(train.main)
    except train.Interrupted as exc:  # recorded; exit as the shell reports a signal
        return exc.exit_code
    # A sweep's summary was printed by the SweepSummary callback; a failed job fails the command.
    sweep = sweeps.LAST_SWEEP
    return 1 if sweep is not None and sweep.failed else 0


def _run_hydra_app(app: Callable[[], None]) -> None:
    """Run a Hydra app so that a disk fault reaches :func:`main` as an exception.

    Hydra prints any error that escapes the app (creating the run directory is one) as
    a traceback and exits; ``HYDRA_FULL_ERROR`` makes it raise instead. Every error that
    is not a disk fault then goes to Hydra's own report, as before. A user who set
    ``HYDRA_FULL_ERROR`` gets full tracebacks of everything. The processes the app starts
    (DDP ranks, sweep workers) inherit the variable with :data:`OWN_FULL_ERROR`, which
    tells them it was set here, not by the user.
    """
    if _user_wants_full_errors():
        app()
        return
    from hydra._internal.utils import run_and_report

    os.environ.update({"HYDRA_FULL_ERROR": "1", OWN_FULL_ERROR: "1"})
    try:
        app()
    except Exception as exc:
        if disk_faults.describe(exc) is not None:
            raise
        del os.environ["HYDRA_FULL_ERROR"]
        run_and_report(functools.partial(_raise, exc))  # the trimmed traceback, exit 1
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        os.environ.pop(OWN_FULL_ERROR, None)


# Set beside HYDRA_FULL_ERROR by _run_hydra_app, for the processes its app starts.
OWN_FULL_ERROR = "SWEEPLAB_SET_HYDRA_FULL_ERROR"


def _user_wants_full_errors() -> bool:
    return bool(os.environ.get("HYDRA_FULL_ERROR")) and not os.environ.get(OWN_FULL_ERROR)


def _raise(exc: BaseException) -> None:
    raise exc


def _train_help() -> int:
    """Hydra's help (groups, options, the composed config), then the registered regimes."""
    from sweeplab import train
    from sweeplab.regimes.registry import describe_regimes

    try:
        train.main()
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise
    print(f"\n== Regimes (regime=<name>) ==\n{describe_regimes()}")
    return 0


def _eval(args: list[str]) -> int:
    from sweeplab.evaluate import main as eval_main

    return eval_main(args)


def _publish(args: list[str]) -> int:
    from sweeplab.publish import main as publish_main

    return publish_main(args)


def _nas(args: list[str]) -> int:
    from sweeplab.nas.cli import main as nas_main

    return nas_main(args)


def _search(args: list[str]) -> int:
    from sweeplab.search import main as search_main

    return search_main(args)


def _runs(args: list[str]) -> int:
    from sweeplab.tracking.runs_cli import main as runs_main

    return runs_main(args)


def _table(args: list[str]) -> int:
    from sweeplab.tables.cli import main as table_main

    return table_main(args)


def _dashboard(args: list[str]) -> int:
    from sweeplab.dashboard.launch import main as dashboard_main

    return dashboard_main(args)


def _sync(args: list[str]) -> int:
    from sweeplab.tracking.sync import main as sync_main

    return sync_main(args)


COMMANDS = {
    "train": _train,
    "eval": _eval,
    "search": _search,
    "publish": _publish,
    "nas": _nas,
    "runs": _runs,
    "table": _table,
    "dashboard": _dashboard,
    "sync": _sync,
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Lightning's DDP launcher restarts this script for ranks > 0 with the
    # train overrides only (the subcommand was consumed by rank 0).
    if os.environ.get("LOCAL_RANK", "0") != "0" and (not args or args[0] not in COMMANDS):
        return _train(args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"sweeplab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except BrokenPipeError:  # e.g. `sweeplab runs | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a full disk, a corrupt archive: the user's to fix, in one line
        reason = disk_faults.describe(exc)
        if reason is None or _user_wants_full_errors():
            raise
        print(f"sweeplab: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
