"""The ``sweeplab`` command: dispatch to the apps.

sweeplab train [overrides…]          one run; with -m, a sweep
sweeplab eval run=<dir|id> [eval…]   re-evaluate a finished run from its eval cache
sweeplab runs [filters]              list the run store
"""

from __future__ import annotations

import os
import sys
import warnings

USAGE = """usage: sweeplab <command> [args…]

commands:
  train [overrides…]     train and evaluate one run (with -m: a sweep over overrides)
  eval run=<dir|id> …    re-evaluate a finished run from its eval cache (sweeplab eval --help)
  runs [filters…]        list the run store as a table (sweeplab runs --help)

  sweeplab train --help  shows the config groups and their options
"""


def _train(args: list[str]) -> int:
    from sweeplab import train

    # Our launcher presets share names with the plugins' own configs, on purpose.
    warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema")
    sys.argv = [sys.argv[0], *args]
    train.main()
    failed = [o for o in train.OUTCOMES if o.status == "failed"]
    if len(train.OUTCOMES) > 1:
        counts = {
            s: sum(o.status == s for o in train.OUTCOMES) for s in ("complete", "skipped", "failed")
        }
        print(
            f"sweep: {len(train.OUTCOMES)} runs — {counts['complete']} complete, "
            f"{counts['skipped']} already complete (skipped), {counts['failed']} failed"
        )
        for outcome in failed:
            print(f"  failed: {outcome.run_dir}: {outcome.error}")
    return 1 if failed else 0


def _eval(args: list[str]) -> int:
    from sweeplab.evaluate import main as eval_main

    return eval_main(args)


def _runs(args: list[str]) -> int:
    from sweeplab.tracking.runs_cli import main as runs_main

    return runs_main(args)


COMMANDS = {"train": _train, "eval": _eval, "runs": _runs}


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


if __name__ == "__main__":
    sys.exit(main())
