"""Table rendering on a hand-written run store: aggregation, best marks, references, formats."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from sweeplab.tables.cells import Table, resolve
from sweeplab.tables.compare import (
    T_975,
    compare_rows,
    paired_difference,
    render_comparison,
    t_quantile_975,
)
from sweeplab.tables.render import render, render_csv, render_latex, render_markdown
from sweeplab.tables.spec import parse_spec

SPEC = """\
title: Fixture table
row_header: Mixer
base: [trainer.max_epochs=1]
seeds: [0, 1, 2]
rows:
  - {label: none, overrides: [augment=none]}
  - {label: mixup, overrides: [augment=mixup]}
  - {label: cutmix, overrides: [augment=cutmix]}
columns:
  - {label: acc, metric: test/cls/acc, format: {percent: true, decimals: 1}}
  - {label: NLL, metric: test/cls/nll, format: {decimals: 3, lower_is_better: true}}
tolerance: 0.4
references:
  - {row: none, column: acc, value: 91.5, source: Paper A}
  - {row: mixup, column: acc, value: 94.2, source: Paper A}
"""

# seed -> (acc, nll); mixup has no seed 2, cutmix has no runs at all.
RUNS = {
    "none": {0: (0.90, 0.30), 1: (0.92, 0.32), 2: (0.94, 0.34)},
    "mixup": {0: (0.95, 0.35), 1: (0.93, 0.37)},
}


def write_run(run_dir: Path, metrics: dict, status: str = "complete") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"schema": 1, "run_id": run_dir.name, "name": run_dir.parent.name}
    record.update(status=status, error=None, metrics=metrics)
    (run_dir / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Table:
    runs = tmp_path_factory.mktemp("store") / "runs"
    table = resolve(parse_spec(SPEC, "fixture.yaml"), runs)
    for row, seeds in RUNS.items():
        slots = {s.seed: s for s in table.cell(row, "acc").group.slots}
        for seed, (acc, nll) in seeds.items():
            write_run(slots[seed].run_dir, {"test/cls/acc": acc, "test/cls/nll": nll})
    # A failed run is not a value: mixup seed 2 failed.
    write_run(table.cell("mixup", "acc").group.slots[2].run_dir, {}, status="failed")
    table.reload()
    return table


def test_cells_are_found_under_the_composed_run_ids(table: Table) -> None:
    from sweeplab.tracking.identity import compute_run_id
    from tests.conftest import compose_config

    slot = table.cell("mixup", "NLL").group.slots[1]
    cfg = compose_config(["trainer.max_epochs=1", "augment=mixup", "seed=1"])
    assert slot.run_dir == table.runs_dir / "digits_small_cnn" / compute_run_id(cfg)
    # Metric columns of one row read the same runs.
    assert table.cell("mixup", "NLL").group is table.cell("mixup", "acc").group
    assert len(table.groups) == 3


def test_mean_std_n_in_display_units(table: Table) -> None:
    none_acc = table.cell("none", "acc")
    assert none_acc.mean == pytest.approx(92.0)
    assert none_acc.std == pytest.approx(2.0)
    assert (none_acc.n, none_acc.missing) == (3, 0)
    mixup_nll = table.cell("mixup", "NLL")
    assert mixup_nll.mean == pytest.approx(0.36)
    assert mixup_nll.std == pytest.approx(math.sqrt(2) * 0.01)
    assert (mixup_nll.n, mixup_nll.missing) == (2, 1)
    cutmix = table.cell("cutmix", "acc")
    assert (cutmix.mean, cutmix.std, cutmix.n, cutmix.missing) == (None, None, 0, 3)


MARKDOWN = """\
### Fixture table

| Mixer   |                           acc ↑ |   paper |        Δ |                          NLL ↓ |
|:--------|--------------------------------:|--------:|---------:|-------------------------------:|
| none    |                92.0 ± 2.0 (n=3) |    91.5 | +0.5 (!) |        **0.320 ± 0.020** (n=3) |
| mixup   | **94.0 ± 1.4** (n=2, 1 missing) |    94.2 |     -0.2 | 0.360 ± 0.014 (n=2, 1 missing) |
| cutmix  |           missing (3 of 3 runs) |         |          |          missing (3 of 3 runs) |

mean ± std over seeds 0, 1, 2 (n = seeds with a value); bold: best in column (↑ higher is better, ↓ lower is better).
paper: published value; Δ = mean − paper; (!) outside tolerance.
source: Paper A, tolerance ±0.4
missing: mixup × acc: seed 2 failed
missing: mixup × NLL: seed 2 failed
missing: cutmix × acc: seed 0 not run; seed 1 not run; seed 2 not run
missing: cutmix × NLL: seed 0 not run; seed 1 not run; seed 2 not run"""


def test_markdown(table: Table) -> None:
    # acc best is the higher mean (mixup), NLL best the lower (none); |+0.5| > 0.4 is flagged.
    assert render_markdown(table) == MARKDOWN
    assert render(table) == MARKDOWN


def test_latex(table: Table) -> None:
    text = render_latex(table)
    print(text)
    body = text[text.index(r"\begin{tabular}") :].splitlines()
    assert body == [
        r"\begin{tabular}{lrrrr}",
        r"\toprule",
        r"Mixer & acc $\uparrow$ & Paper & $\Delta$ & NLL $\downarrow$ \\",
        r"\midrule",
        r"none & $92.0 \pm 2.0$ & 91.5 & $+0.5^{\dagger}$ & $\mathbf{0.320 \pm 0.020}$ \\",
        r"mixup & $\mathbf{94.0 \pm 1.4}$\,{\scriptsize($n{=}2$)} & 94.2 & $-0.2$ & "
        r"$0.360 \pm 0.014$\,{\scriptsize($n{=}2$)} \\",
        r"cutmix & \textit{missing (3 of 3 runs)} &  &  & \textit{missing (3 of 3 runs)} \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"% \dagger: outside the tolerance of the published value",
    ]
    assert text.startswith("% Fixture table\n% mean ± std over seeds 0, 1, 2")


def test_csv(table: Table) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    by_cell = {(r["row"], r["column"]): r for r in rows}
    assert len(rows) == 6
    none_acc = by_cell["none", "acc"]
    assert float(none_acc["mean"]) == pytest.approx(92.0)
    assert float(none_acc["std"]) == pytest.approx(2.0)
    assert (none_acc["n"], none_acc["missing"], none_acc["best"]) == ("3", "0", "0")
    assert float(none_acc["reference"]) == 91.5
    assert float(none_acc["difference"]) == pytest.approx(0.5)
    assert (none_acc["outside_tolerance"], none_acc["source"]) == ("1", "Paper A")
    mixup_acc = by_cell["mixup", "acc"]
    assert (mixup_acc["best"], mixup_acc["outside_tolerance"], mixup_acc["n"]) == ("1", "0", "2")
    assert float(mixup_acc["difference"]) == pytest.approx(-0.2)
    assert by_cell["none", "NLL"]["best"] == "1"  # lower is better
    assert by_cell["mixup", "NLL"]["best"] == "0"
    assert by_cell["none", "NLL"]["metric"] == "test/cls/nll"
    cutmix = by_cell["cutmix", "NLL"]
    assert (cutmix["mean"], cutmix["std"], cutmix["n"], cutmix["missing"]) == ("", "", "0", "3")
    assert render(table, "csv") == render_csv(table)


def test_empty_store_renders_every_cell_missing(tmp_path: Path) -> None:
    table = resolve(parse_spec(SPEC, "fixture.yaml"), tmp_path / "runs")
    text = render_markdown(table)
    assert text.count("missing (3 of 3 runs)") == 6
    assert "**" not in text.split("\n\n")[1]
    assert table.absent_metrics() == []


def test_metric_absent_from_every_complete_run_is_reported(tmp_path: Path) -> None:
    table = resolve(parse_spec(SPEC, "fixture.yaml"), tmp_path / "runs")
    write_run(table.cell("none", "acc").group.slots[0].run_dir, {"test/cls/acc": 0.9})
    table.reload()
    assert [c.label for c in table.absent_metrics()] == ["NLL"]
    assert "seed 0 complete but has no test/cls/nll" in render_markdown(table)


# --------------------------------------------------------------------------- paired comparison


def test_t_quantiles() -> None:
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(10) == pytest.approx(T_975[9], abs=1e-3)
    assert t_quantile_975(30) == pytest.approx(T_975[29], abs=1e-3)


def test_paired_difference_by_hand() -> None:
    result = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 3: 5.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert result.n == 3
    assert result.mean == pytest.approx(2.0)
    # differences [1, 2, 3]: sd 1, half-width t_{0.975,2} · 1/√3
    assert result.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (result.low, result.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-5)
    single = paired_difference({0: 1.0}, {0: 0.5})
    assert (single.mean, single.half_width, single.n) == (0.5, None, 1)
    assert paired_difference({0: 1.0}, {1: 1.0}).mean is None


def test_compare_rows_of_the_table(table: Table) -> None:
    results = compare_rows(table, "mixup", "none")
    # acc: mixup [95, 93] − none [90, 92] = [5, 1] → mean 3, sd 2√2, t_{0.975,1} = 12.706
    assert results["acc"].n == 2
    assert results["acc"].mean == pytest.approx(3.0)
    assert results["acc"].half_width == pytest.approx(
        12.7062 * 2 * math.sqrt(2) / math.sqrt(2), rel=1e-4
    )
    text = render_comparison(table, "mixup", "none")
    assert text.splitlines()[1] == "  acc (higher is better): +3.0 [-22.4, 28.4], n=2"
    assert text.splitlines()[2] == "  NLL (lower is better): +0.050 [0.050, 0.050], n=2"
    assert "no seed with a value" in render_comparison(table, "cutmix", "none")
