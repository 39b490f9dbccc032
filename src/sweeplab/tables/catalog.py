"""Where table specs are found: the ones shipped with sweeplab, and the user's own.

The shipped specs are ``experiments/`` of the checkout; ``src/sweeplab/experiments``
is a link to it, so an installed wheel carries them as ``sweeplab/experiments`` (as it
carries ``conf/``) and ``sweeplab table digits_mixers`` works from any directory. A
spec is named by its path, or by its file name (with or without ``.yaml``), looked up
first in the user's directories (``--experiments-dir``, in order), then in the shipped
ones, so a user's spec of the same name wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sweeplab.tables.spec import SpecError

SPEC_SUFFIX = ".yaml"


def shipped_dir() -> Path:
    """The directory of the specs that ship with sweeplab (beside this package; in a
    checkout, the top-level ``experiments/`` the link points to)."""
    return (Path(__file__).resolve().parents[1] / "experiments").resolve()


def spec_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """The directories searched for a spec by name: ``extra`` first, then the shipped one."""
    dirs: list[Path] = []
    for directory in [*(Path(d).expanduser() for d in extra), shipped_dir()]:
        if directory.resolve() not in [d.resolve() for d in dirs]:
            dirs.append(directory)
    return dirs


def list_specs(extra: Sequence[str | Path] = ()) -> dict[str, Path]:
    """``name → path`` of every spec found by name (a name's first directory wins)."""
    found: dict[str, Path] = {}
    for directory in spec_dirs(extra):
        if directory.is_dir():
            for path in sorted(directory.glob(f"*{SPEC_SUFFIX}")):
                found.setdefault(path.stem, path)
    return found


def find_spec(spec: str | Path, extra: Sequence[str | Path] = ()) -> Path:
    """The spec file ``spec`` names: an existing path as it is, else a spec by its name
    (``digits_mixers``, ``digits_mixers.yaml`` or ``experiments/digits_mixers.yaml``
    from another directory) in :func:`spec_dirs`; a :class:`SpecError` listing the known
    names otherwise."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = path.name.removesuffix(SPEC_SUFFIX)
    known = list_specs(extra)
    if name in known:
        return known[name]
    where = ", ".join(str(d) for d in spec_dirs(extra))
    names = ", ".join(known) or "none"
    raise SpecError(
        f"{spec}: no such file, and no spec named {name!r} in {where} (known: {names}); "
        "add a directory with --experiments-dir"
    )
