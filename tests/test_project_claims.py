"""The package's description and the README's opening say what exists: every regime they name
is registered, and NAS is not claimed while no supernet regime is."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sweeplab.regimes.registry import list_regimes

ROOT = Path(__file__).resolve().parents[1]
# What the texts name -> the regimes that must exist for it.
CLAIMS = {
    "ERM": ["erm"],
    "deep ensembles": ["ensemble", "ensemble_from_runs"],
    "implicit ensembles": ["batch_ensemble", "packed", "mc_dropout", "snapshot"],
    "distillation": ["distill"],
    "model merging": ["merge"],
}


def description() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"]


def opening() -> str:
    """The README up to its first section."""
    return (ROOT / "README.md").read_text().split("\n## ", 1)[0]


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_every_named_regime_exists(claim):
    assert claim.lower() in description().lower()
    assert claim.lower() in " ".join(opening().split()).lower()
    assert set(CLAIMS[claim]) <= set(list_regimes())


def test_nas_is_not_claimed_before_it_exists():
    if any("supernet" in name or "nas" in name.split("_") for name in list_regimes()):
        pytest.skip("a NAS regime exists: the texts may name it")
    assert "NAS" not in description() and "supernet" not in description().lower()
    text = " ".join(opening().split())
    for sentence in (s for s in text.split(". ") if "NAS" in s or "supernet" in s.lower()):
        assert "not built yet" in sentence, sentence
