"""Table specs: what they accept, and bad specs rejected with the line at fault."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from sweeplab.tables.cells import Composer, resolve
from sweeplab.tables.render import render_csv
from sweeplab.tables.spec import Format, SpecError, known_metric, load_spec, parse_spec

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

GOOD = """\
title: Good
base: trainer.max_epochs=1 data.val_fraction=0.2
seeds: [0, 1]
metric: test/cls/acc
format: {percent: true, decimals: 1}
rows:
  - augment=none
  - {label: mixup, overrides: [augment=mixup, augment.alpha=1.0]}
columns:
  - label: acc
  - {label: ECE, metric: test/cal/ece, format: {lower_is_better: true, decimals: 3}}
"""


def test_a_good_spec() -> None:
    spec = parse_spec(GOOD, "good.yaml")
    assert [o.text for o in spec.base] == ["trainer.max_epochs=1", "data.val_fraction=0.2"]
    assert spec.seeds == (0, 1)
    assert [r.label for r in spec.rows] == ["augment=none", "mixup"]
    assert [o.text for o in spec.rows[1].overrides] == ["augment=mixup", "augment.alpha=1.0"]
    assert spec.rows[1].overrides[0].line == 8
    acc, ece = spec.columns
    assert (acc.metric, acc.format) == ("test/cls/acc", Format(True, 1, False))
    # A column's format keys override the spec's, the rest are inherited.
    assert (ece.metric, ece.format) == ("test/cal/ece", Format(True, 3, True))
    assert spec.references == {}


@pytest.mark.parametrize(
    "name", ["test/cls/acc", "val/cal/ece_ts", "ood/near/energy/auroc", "shift/mean/acc",
             "perf/train_samples_per_s", "train/epochs", "val/cls/acc"]
)  # fmt: skip
def test_known_metrics(name: str) -> None:
    assert known_metric(name)


@pytest.mark.parametrize("name", ["acc", "test/acc", "tset/cls/acc", "ood", "Test/cls/acc"])
def test_unknown_metrics(name: str) -> None:
    assert not known_metric(name)


def _error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.yaml")
    return str(info.value)


def test_unknown_metric_names_its_line() -> None:
    text = GOOD.replace("metric: test/cal/ece", "metric: test/calibration_ece")
    assert _error(text).startswith("bad.yaml:11: unknown metric 'test/calibration_ece'")
    assert _error(GOOD.replace("metric: test/cls/acc", "metric: accuracy")).startswith(
        "bad.yaml:4: unknown metric 'accuracy'"
    )


def test_duplicate_row_label_names_its_line() -> None:
    text = GOOD.replace("{label: mixup,", "{label: augment=none,")
    assert _error(text) == ("bad.yaml:8: duplicate row label 'augment=none' (first on line 7)")


def test_reference_without_source_names_its_line() -> None:
    text = GOOD + (
        "references:\n"
        "  - {row: mixup, column: acc, value: 95.0, source: Paper}\n"
        "  - row: augment=none\n"
        "    column: acc\n"
        "    value: 94.0\n"
    )
    assert _error(text) == (
        "bad.yaml:14: reference for (augment=none, acc) has no source: "
        "say where the number is published"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("seeds: [0, 1]", "seeds: [0, 0]"), "bad.yaml:3: seeds: a seed is listed twice"),
        (("title: Good", "titel: Good"), "bad.yaml:1: unknown key 'titel'"),
        (
            ("  - label: acc", "  - label: acc\n    colour: red"),
            "bad.yaml:11: columns: unknown key",
        ),
        (("decimals: 1}", "decimals: one}"), "bad.yaml:5: format.decimals: expected a whole"),
        (
            (
                "rows:\n  - augment=none\n  - {label: mixup, overrides: [augment=mixup, augment.alpha=1.0]}\n",
                "rows: []\n",
            ),
            "bad.yaml:6: rows: expected a non-empty list",
        ),
        (("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"), "bad.yaml:4: duplicate key 'seeds'"),
        (("metric: test/cls/acc\n", ""), "bad.yaml:9: column 'acc' has no metric"),
        (("  - augment=none", "  - augment none"), "bad.yaml:7: rows: 'augment none' is not"),
        (("rows:", "rows: ["), "bad.yaml:"),
    ],
)
def test_other_mistakes_name_their_line(change: tuple[str, str], expected: str) -> None:
    assert _error(GOOD.replace(*change)).startswith(expected)


def test_reference_to_unknown_row_or_column() -> None:
    ref = "references:\n  - {row: cutmix, column: acc, value: 1, source: S}\n"
    assert _error(GOOD + ref) == "bad.yaml:13: references: no row 'cutmix'"
    ref = "references:\n  - {row: mixup, column: NLL, value: 1, source: S}\n"
    assert _error(GOOD + ref) == "bad.yaml:13: references: no column 'NLL'"


def test_override_that_does_not_compose_names_its_line(tmp_path: Path) -> None:
    spec = parse_spec(GOOD.replace("augment.alpha=1.0", "augment.alpah=1.0"), "bad.yaml")
    with pytest.raises(
        SpecError, match=r"^bad.yaml:8: override 'augment.alpah=1.0' does not compose"
    ):
        resolve(spec, tmp_path)
    spec = parse_spec(GOOD.replace("  - augment=none", "  - augment=nonesuch"), "bad.yaml")
    with pytest.raises(
        SpecError, match=r"^bad.yaml:7: override 'augment=nonesuch' does not compose"
    ):
        resolve(spec, tmp_path)
    spec = parse_spec(GOOD, "bad.yaml").with_extra_overrides(["trainer.max_epoch=3"])
    with pytest.raises(
        SpecError, match=r"bad.yaml \(command line\): override 'trainer.max_epoch=3'"
    ):
        resolve(spec, tmp_path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "name", ["digits_mixers", "digits_calibration", "cifar10_mixup_gpu", "cifar10_nas_ranking"]
)
def test_shipped_specs_load_and_compose(name: str, tmp_path: Path) -> None:
    spec = load_spec(EXPERIMENTS / f"{name}.yaml")
    composer = Composer()
    table = resolve(spec, tmp_path, composer)
    runs = {slot.run_dir for group in table.groups for slot in group.slots}
    assert len(runs) == len(spec.rows) * len(spec.seeds)
    assert composer.composed == len(runs)  # one compose per run, none repeated
    if name == "cifar10_mixup_gpu":
        assert {r.value for r in spec.references.values()} == {94.87, 95.70, 96.11}
        assert all("OpenMixup" in r.source for r in spec.references.values())
        assert all(r.tolerance == 0.5 for r in spec.references.values())
        # No runs here: references shown, no difference and no tolerance verdict.
        rows = list(csv.DictReader(io.StringIO(render_csv(table))))
        assert [(r["reference"], r["difference"], r["outside_tolerance"]) for r in rows] == [
            ("94.87", "", ""),
            ("95.7", "", ""),
            ("96.11", "", ""),
        ]
