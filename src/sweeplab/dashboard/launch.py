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
MAX_PORT = 65535
APP = Path(__file__).with_name("app.py")


class _OneLineErrors(argparse.ArgumentParser):
    """A bad option is one ``sweeplab:`` line, not the usage block and a traceback."""

    def error(self, message: str):
        command = self.prog.removeprefix("sweeplab ")
        self.exit(2, f"sweeplab: {command}: {message} (see {self.prog} --help)\n")


def port_number(text: str) -> int:
    """``--port``: a TCP port in 0–65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number in 0–{MAX_PORT}, got {text!r}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
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
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="0–65535 (default: %(default)s)"
    )
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


def free_port_after(host: str, port: int, tries: int = 50) -> int | None:
    """The first port above ``port`` that nothing listens on, to suggest instead of it."""
    for candidate in range(port + 1, min(port + 1 + tries, MAX_PORT + 1)):
        if not port_in_use(host, candidate):
            return candidate
    return None


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
        free = free_port_after(args.host, args.port)
        example = f" (e.g. --port {free}, which is free)" if free is not None else ""
        print(
            f"sweeplab: port {args.port} on {args.host} is already in use; "
            f"pick another with --port{example}",
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
