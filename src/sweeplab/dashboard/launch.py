"""``sweeplab dashboard``: serve the dashboard app with Streamlit on 127.0.0.1.

The port is checked before Streamlit starts, because Streamlit silently moves
to the next free port when the one asked for is taken, and a user who typed
``--port`` should learn that rather than find a different address.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from sweeplab.tracking import layout

DEFAULT_PORT = 8501
APP = Path(__file__).with_name("app.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeplab dashboard",
        description="Browse the run store: runs table, one run's curves, plots and metrics, "
        "and comparisons across runs.",
    )
    parser.add_argument(
        "--runs-dir", default=None, help=f"run store (default: {layout.RUNS_DIR_RULE})"
    )
    parser.add_argument(
        "--experiments-dir",
        default="experiments",
        help="table specs shown on the Tables page (default: %(default)s)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    return parser


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port`` (binding would fail)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def streamlit_command(
    runs_dir: Path, host: str, port: int, experiments_dir: Path = Path("experiments")
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--global.developmentMode",
        "false",
        "--",
        "--runs-dir",
        str(runs_dir),
        "--experiments-dir",
        str(experiments_dir),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    runs_dir = layout.runs_dir(args.runs_dir).resolve()
    if port_in_use(args.host, args.port):
        print(
            f"sweeplab dashboard: port {args.port} on {args.host} is already in use; "
            f"pick another with --port (e.g. --port {args.port + 1}).",
            file=sys.stderr,
        )
        return 1
    print(
        f"sweeplab dashboard: http://{args.host}:{args.port}  (run store: {runs_dir})", flush=True
    )
    experiments_dir = Path(args.experiments_dir).resolve()
    command = streamlit_command(runs_dir, args.host, args.port, experiments_dir)
    # Become the server, so Ctrl-C and a kill reach Streamlit itself, not a parent above it.
    os.execv(command[0], command)


if __name__ == "__main__":
    raise SystemExit(main())
