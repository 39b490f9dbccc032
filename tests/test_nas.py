"""NAS over a supernet run: costs, search under budgets, ranking diagnostics, proxies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sweeplab.data.datamodule import InMemoryDataModule
from sweeplab.models.search_space import encode
from sweeplab.models.supernet import Subnet
from sweeplab.nas import cli as nas_cli
from sweeplab.nas import ranking
from sweeplab.nas.flops import CostTable, forward_flops
from sweeplab.nas.proxies import PROXIES
from sweeplab.nas.search import Budget, Candidate, mutate, pareto_front
from sweeplab.nas.supernet_run import SupernetRun
from tests.conftest import run_in_store
from tests.test_supernet import TINY, supernet


def test_flops_are_torchs_count_and_a_hand_count_of_a_tiny_subnet():
    tiny = Subnet(
        num_classes=10,
        in_chans=1,
        image_size=8,
        arch="d1w1k3",
        widths=[4],
        depths=[1],
        width_mults=[1.0],
        kernels=[3],
        stem_width=4,
    )
    # stem 3×3 (1→4), conv1 and conv2 3×3 (4→4), 1×1 shortcut (4→4) on 8×8, head 4→10;
    # a multiply-add is 2 FLOPs
    hand = 2 * 64 * (1 * 4 * 9 + 4 * 4 * 9 + 4 * 4 * 9 + 4 * 4) + 2 * 4 * 10
    assert forward_flops(tiny, (1, 8, 8)) == hand == 43600
    net = supernet()
    costs = CostTable(net)
    for arch in (net.space.smallest(), net.space.largest()):
        standalone = net.extract(arch)
        assert costs(arch).flops == forward_flops(standalone, (1, 8, 8))
        assert costs(arch).params == sum(p.numel() for p in standalone.parameters())
    assert costs(net.space.smallest()).flops < costs(net.space.largest()).flops


def test_cost_table_is_kept_and_a_damaged_one_is_recounted(tmp_path):
    net = supernet()
    path = tmp_path / "costs.json"
    table = CostTable(net, path)
    cost = table(net.space.largest())
    table.save()
    assert json.loads(path.read_text())[encode(net.space.largest())]["flops"] == cost.flops
    path.write_text("{not json")
    assert CostTable(net, path)(net.space.largest()) == cost


def test_rank_measures_match_hand_values_and_scipy():
    truth = [0.1, 0.2, 0.3, 0.4]
    assert ranking.kendall_tau(truth, truth) == pytest.approx(1.0)
    assert ranking.kendall_tau(truth, truth[::-1]) == pytest.approx(-1.0)
    one_swap = [0.1, 0.3, 0.2, 0.4]  # 5 concordant pairs, 1 discordant of 6
    assert ranking.kendall_tau(one_swap, truth) == pytest.approx(4 / 6)
    assert ranking.spearman_rho(one_swap, truth) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # the sparse τ ties accuracies within 0.1 %: 0.5001 and 0.5004 are one value
    noisy = [0.5004, 0.5001, 0.62, 0.71]
    clean = [0.50, 0.51, 0.62, 0.71]
    assert ranking.kendall_tau(noisy, clean) == pytest.approx(4 / 6)
    assert ranking.sparse_kendall_tau(noisy, clean) == pytest.approx(
        stats.kendalltau([500, 500, 620, 710], clean).statistic
    )
    rng = np.random.default_rng(0)
    x, y = rng.random(12), rng.random(12)
    assert ranking.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert ranking.spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    # the vectorised forms the bootstrap uses agree with scipy, ties included
    tied = np.round(x * 4), np.round(y * 4)
    for a, b in ((x, y), tied):
        assert ranking.VECTORISED["kendall_tau"](a, b) == pytest.approx(
            stats.kendalltau(a, b).statistic
        )
        assert ranking.VECTORISED["spearman"](a, b) == pytest.approx(
            stats.spearmanr(a, b).statistic
        )
    report = ranking.rank_report(x, y)
    assert report["kendall_tau_low"] <= report["kendall_tau"] <= report["kendall_tau_high"]
    assert report == ranking.rank_report(x, y)  # the bootstrap is seeded
    # with 3 items many resamples repeat one item (no τ): they are left out, not NaN-ing it all
    few = ranking.rank_report([0.1, 0.3, 0.2], [0.2, 0.25, 0.3])
    assert np.isfinite(few["kendall_tau_low"]) and np.isfinite(few["spearman_high"])


def test_mutation_changes_one_choice_and_the_pareto_front_is_undominated():
    space = supernet().space
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        arch = space.sample(generator)
        child = mutate(space, arch, generator)
        changes = sum(
            (a.depth != b.depth) + (a.width != b.width) + (a.kernel != b.kernel)
            for a, b in zip(arch, child, strict=True)
        )
        assert changes == 1
        space.check(child, "child")
    found = [
        Candidate("a", 0.5, 10, 1),
        Candidate("b", 0.6, 20, 1),
        Candidate("c", 0.55, 30, 1),
        Candidate("d", 0.7, 40, 1),
        Candidate("e", 0.4, 5, 1),
    ]
    assert [c.arch for c in pareto_front(found)] == ["e", "a", "b", "d"]


def test_budgets_pair_up_and_bad_ones_are_refused():
    assert nas_cli.budgets_of([2.0, 5.0], []) == [Budget(2.0), Budget(5.0)]
    assert nas_cli.budgets_of([2.0], [100]) == [Budget(2.0, 100)]
    assert nas_cli.budgets_of([], []) == [Budget()]
    with pytest.raises(nas_cli.NasError, match="same number of values"):
        nas_cli.budgets_of([1.0, 2.0], [5])
    assert Budget(2.5, 1000).key() == "mflops_2.5_params_1000"


def test_every_proxy_scores_a_fresh_subnet_and_leaves_it_unchanged():
    net = supernet()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    model = net.blank_subnet(net.space.largest(), seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, proxy in PROXIES.items():
        value = proxy(model, x, y)
        assert np.isfinite(value), name
        assert value == proxy(net.blank_subnet(net.space.largest(), seed=0), x, y), name
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # more parameters, more synflow: the largest subnet outscores the smallest at init
    small = net.blank_subnet(net.space.smallest(), seed=0)
    assert PROXIES["synflow"](model, x, y) > PROXIES["synflow"](small, x, y)


@pytest.fixture(scope="module")
def supernet_store(tmp_path_factory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("nas")
    outcome = run_in_store(store, TINY)
    assert outcome.status == "complete", outcome.error
    return store, Path(outcome.run_dir).name


def test_search_stays_within_budget_never_reads_test_and_records_its_best(
    supernet_store, monkeypatch, capsys
):
    store, run_id = supernet_store
    split = InMemoryDataModule.split

    def no_test(self, name):
        if name == "test":
            raise AssertionError("the search read the test split")
        return split(self, name)

    monkeypatch.setattr(InMemoryDataModule, "split", no_test)
    nas = SupernetRun.open(run_id, store / "runs")
    costs = nas.costs()
    smallest = costs(nas.supernet.space.smallest()).mflops
    budget = round(smallest * 2, 3)
    args = [
        "search",
        f"run={run_id}",
        f"paths.root_dir={store}",
        "--mflops",
        str(budget),
        "--samples",
        "12",
    ]
    assert nas_cli.main(args) == 0
    printed = capsys.readouterr().out
    data = json.loads((store / "runs" / nas.run.name / run_id / "nas" / "search.json").read_text())
    assert data["split"] == "val" and len(data["candidates"]) >= 1
    assert all(c["flops"] / 1e6 <= budget for c in data["candidates"])
    best = data["budgets"][0]["best"]
    assert best["val_acc"] == max(c["val_acc"] for c in data["candidates"])
    assert f"backbone=subnet backbone.arch={best['arch']}" in printed
    assert f"sweeplab eval run={run_id} subnet={best['arch']} paths.root_dir={store}" in printed
    record = json.loads((store / "runs" / nas.run.name / run_id / "record.json").read_text())
    assert record["metrics"][f"nas/search/mflops_{budget:g}/val_acc"] == best["val_acc"]
    assert (
        store / "runs" / nas.run.name / run_id / record["artifacts"]["nas_pareto_plot"]
    ).is_file()
    # the same seed searches the same subnets
    assert nas_cli.main(args) == 0
    again = json.loads((store / "runs" / nas.run.name / run_id / "nas" / "search.json").read_text())
    assert again["candidates"] == data["candidates"]
    too_small = ["search", f"run={run_id}", f"paths.root_dir={store}", "--mflops", "0.0001"]
    assert nas_cli.main(too_small) == 1
    assert "no architecture within ≤ 0.0001 MFLOPs" in capsys.readouterr().err


def test_a_subnet_inherits_the_supernets_weights_through_init_from(supernet_store):
    from sweeplab.assembly import build_regime
    from sweeplab.regimes.init_from import apply_init_from
    from sweeplab.regimes.loading import model_input_of
    from tests.conftest import compose_config

    store, run_id = supernet_store
    nas = SupernetRun.open(run_id, store / "runs")
    arch = "d1w0.5k3-d2w1k5"
    cfg = compose_config(nas.subnet_overrides(arch))
    regime = build_regime(cfg, model_input_of(nas.run))
    apply_init_from(regime, run_id, "keep", store / "runs")
    expected = nas.supernet.subnet_state(arch)
    for key, value in regime.backbone.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_rank_trains_nothing_itself_and_reports_every_scorer(supernet_store, capsys):
    store, run_id = supernet_store
    nas = SupernetRun.open(run_id, store / "runs")
    args = ["rank", f"run={run_id}", f"paths.root_dir={store}", "--k", "3"]
    assert nas_cli.main(args) == 1
    assert "3 of 3 standalone subnets are not trained yet; add --launch" in capsys.readouterr().err
    archs = [encode(a) for a in nas_cli.sample_distinct(nas.supernet.space, 3, 0)]
    for arch in archs:
        outcome = run_in_store(store, nas.subnet_overrides(arch))
        assert outcome.status == "complete", outcome.error
    assert nas_cli.main(args) == 0
    printed = capsys.readouterr().out
    record = json.loads((nas.run.path / "record.json").read_text())
    for scorer in ("supernet_recalibrate", "supernet_batch", *PROXIES):
        assert f"nas/rank/{scorer}/kendall_tau" in record["metrics"]
        assert scorer in printed
    data = json.loads((nas.run.path / "nas" / "ranking.json").read_text())
    assert data["archs"] == archs and len(data["standalone_val_acc"]) == 3


def test_sweeplab_eval_of_a_subnet_is_a_run_of_the_weights_it_inherits(supernet_store, capsys):
    from sweeplab import evaluate
    from sweeplab.regimes.loading import load_model
    from sweeplab.tracking.runs import open_run

    store, run_id = supernet_store
    nas = SupernetRun.open(run_id, store / "runs")
    arch = "d1w0.5k3-d2w1k5"
    args = ["run=" + run_id, f"subnet={arch}", f"paths.root_dir={store}"]
    assert evaluate.main(args) == 0
    printed = capsys.readouterr().out
    assert "evaluated as a new run" in printed and "test/cls/acc" in printed
    runs = [
        r
        for r in (store / "runs" / "digits_subnet").iterdir()
        if (r / "record.json").is_file() and open_run(r).config["regime"]["name"] == "inherit"
    ]
    inherited = open_run(runs[0])
    assert len(runs) == 1 and inherited.record["sources"] == [run_id]
    metrics = inherited.record["metrics"]
    assert metrics["train/steps"] == 0 and {"test/cls/acc", "ood/near/msp/auroc"} <= set(metrics)
    # its val accuracy is the search's score of it: the same weights and BatchNorm images
    score = nas.scorer()(nas.supernet.space.decode(arch))
    assert metrics["val/cls/acc"] == pytest.approx(score, abs=1e-6)
    # every weight is the supernet's, cropped; only the BatchNorm statistics are its own
    state = load_model(inherited).backbone.state_dict()
    cropped = nas.supernet.subnet_state(arch)
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        torch.testing.assert_close(value, cropped[key], rtol=0, atol=0)
    means = [k for k in state if k.endswith("running_mean")]
    assert any(not torch.equal(state[k], cropped[k]) for k in means)
    # asked again, it is found, and eval overrides re-evaluate that same run
    assert evaluate.main([*args, "eval.calibration.n_bins=10"]) == 0
    assert "its run in the store" in capsys.readouterr().out
    assert open_run(runs[0]).record["config"]["eval"]["calibration"]["n_bins"] == 10
    # bad input: an architecture outside the space, a run that is not a supernet
    assert evaluate.main(["run=" + run_id, "subnet=d3w1k3-d1w1k3", f"paths.root_dir={store}"]) == 1
    err = capsys.readouterr().err
    assert "stage 1 depth 3 is not one of [1, 2] of supernet" in err
    assert evaluate.main(["run=" + runs[0].name, f"subnet={arch}", f"paths.root_dir={store}"]) == 1
    assert "has regime=inherit; give a run of regime=supernet" in capsys.readouterr().err
    assert evaluate.main([*args, "eval.plots=yes"]) == 2
    assert "sweeplab: eval.plots must be true or false, got 'yes'" in capsys.readouterr().err
