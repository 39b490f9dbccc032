"""Table specs by name: the shipped ones from any directory, and ``--experiments-dir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeplab.tables.catalog import find_spec, list_specs, shipped_dir
from sweeplab.tables.cli import main
from sweeplab.tables.spec import SpecError, load_spec

CHECKOUT_SPECS = Path(__file__).resolve().parents[1] / "experiments"


def test_the_shipped_specs_are_the_checkouts_experiments_not_a_copy() -> None:
    assert shipped_dir() == CHECKOUT_SPECS.resolve()
    names = {path.stem for path in CHECKOUT_SPECS.glob("*.yaml")}
    assert names and set(list_specs()) == names


def test_a_shipped_spec_is_found_by_name_from_another_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = (CHECKOUT_SPECS / "digits_mixers.yaml").resolve()
    for name in ("digits_mixers", "digits_mixers.yaml", "experiments/digits_mixers.yaml"):
        assert find_spec(name).resolve() == expected
    assert load_spec(find_spec("digits_mixers")).rows


def test_experiments_dir_adds_specs_and_wins_over_a_shipped_name(tmp_path, monkeypatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "digits_mixers.yaml").write_text("rows: [augment=none]\nmetric: test/cls/acc\n")
    (mine / "own.yaml").write_text("rows: [augment=none]\nmetric: test/cls/acc\n")
    monkeypatch.chdir(tmp_path)
    assert find_spec("own", [mine]) == mine / "own.yaml"
    assert find_spec("digits_mixers", [mine]) == mine / "digits_mixers.yaml"
    assert find_spec("mnist_soups", [mine]).parent == shipped_dir()
    with pytest.raises(SpecError, match=r"no spec named 'nonesuch' .*known: .*digits_mixers"):
        find_spec("nonesuch", [mine])


def test_list_names_every_spec_with_its_title(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "digits_mixers" in out and load_spec(find_spec("digits_mixers")).title in out
    assert main([]) == 2
    assert "name a spec" in capsys.readouterr().err
