"""``regime=merge`` (weight merges of finished runs) and ``init_from=`` (fine-tunes of one
start), on a small store: a base run and two fine-tunes of it, plus a run of another
architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweeplab.assembly import ModelInput, build_components, build_regime, setup_data
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.lineage import pin_sources
from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, run_in_store

QUICK = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "data.val_fraction=0.2",
    "data.seed=0",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.plots=false",
]
TINY = [*QUICK, "backbone.widths=[8,16]"]


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _backbone_state(run_dir: Path) -> dict[str, torch.Tensor]:
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in _state(run_dir).items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """``{"root", "base", "a", "b", "mlp"}``: run dirs of the base, two fine-tunes of it
    (``init_from=base``, other seed / lr) and a run of another backbone."""
    root = tmp_path_factory.mktemp("merge_store")
    base = run_in_store(root, [*TINY, "seed=0"])
    assert base.status == "complete", base.error
    base_id = base.run_dir.name
    a = run_in_store(root, [*TINY, "seed=1", f"init_from={base_id}"])
    b = run_in_store(root, [*TINY, "seed=2", f"init_from={base_id}", "regime.optimizer.lr=0.05"])
    mlp = run_in_store(root, [*QUICK, "backbone=mlp", "backbone.hidden=[16]", "seed=3"])
    for outcome in (a, b, mlp):
        assert outcome.status == "complete", outcome.error
    return {"root": root, "base": base.run_dir, "a": a.run_dir, "b": b.run_dir, "mlp": mlp.run_dir}


def _cfg(store, *overrides: str):
    cfg = compose_config([f"paths.root_dir={store['root']}", *TINY, *overrides])
    pin_sources(cfg)
    return cfg


def _merge_cfg(store, method: str, *overrides: str):
    ids = f"[{store['a'].name},{store['b'].name}]"
    return _cfg(store, "regime=merge", f"regime.runs={ids}", f"regime.method={method}", *overrides)


# -- init_from ------------------------------------------------------------------------


def test_init_from_starts_from_the_source_weights_and_is_in_the_lineage(store):
    base_id = store["base"].name
    cfg = _cfg(store, "seed=5", f"init_from={base_id}")
    _, regime = build_components(cfg)
    source = _backbone_state(store["base"])
    for key, value in regime.backbone.state_dict().items():
        assert torch.equal(value, source[key]), key
    # The fine-tunes' records name the base; their run id hashes it.
    record = read_record(store["a"])
    assert record["sources"] == [base_id]
    assert record["config"]["init_from"] == [base_id]
    plain = compute_run_id(_cfg(store, "seed=1"))
    other = compute_run_id(_cfg(store, "seed=1", f"init_from={store['b'].name}"))
    assert len({plain, other, store["a"].name}) == 3


def test_init_from_reinitialises_the_head_when_class_counts_differ(store):
    cfg = _cfg(store, f"init_from={store['base'].name}", "data.held_out_classes=[9]")
    _, regime = build_components(cfg)
    source = _backbone_state(store["base"])
    state = regime.backbone.state_dict()
    assert state["head.weight"].shape[0] == 9 != source["head.weight"].shape[0]
    body = [k for k in state if not k.startswith("head.")]
    assert body and all(torch.equal(state[k], source[k]) for k in body)
    asked = _cfg(store, f"init_from={store['base'].name}", "init_from_head=reinit")
    _, regime = build_components(asked)
    assert not torch.equal(regime.backbone.head.weight, source["head.weight"])
    assert torch.equal(regime.backbone.body[0][0].weight, source["body.0.0.weight"])


def test_init_from_another_architecture_is_a_one_line_error_naming_both_runs(store):
    cfg = _cfg(store, f"init_from={store['mlp'].name}")
    with pytest.raises(ValueError) as info:
        build_components(cfg)
    message = str(info.value)
    assert "\n" not in message and store["mlp"].name in message
    assert compute_run_id(cfg) in message and "first difference at" in message


# -- merge: the regime, built without a runner ----------------------------------------


def _error(build) -> str:
    """The message of the error ``build()`` raises, unwrapped from Hydra's wrapper."""
    with pytest.raises(Exception) as info:
        build()
    inner = info.value
    while type(inner).__name__ == "InstantiationException" and inner.__cause__ is not None:
        inner = inner.__cause__
    assert isinstance(inner, ValueError), repr(inner)
    return str(inner)


def _merged(store, method: str, *overrides: str):
    cfg = _merge_cfg(store, method, *overrides)
    datamodule = setup_data(cfg)
    regime = build_regime(cfg, ModelInput.of(datamodule))
    regime.prepare(datamodule)
    return regime, datamodule


def _params(regime) -> dict[str, torch.Tensor]:
    return {k: v for k, v in regime.backbone.named_parameters()}


def test_uniform_merge_is_the_mean_of_the_ingredients_and_recomputes_batchnorm(store):
    regime, _ = _merged(store, "uniform")
    a, b = _backbone_state(store["a"]), _backbone_state(store["b"])
    for key, value in _params(regime).items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    running = [k for k in a if k.endswith("running_mean")]
    assert running, "the small CNN has BatchNorm"
    state = regime.backbone.state_dict()
    assert not torch.allclose(state[running[0]], (a[running[0]] + b[running[0]]) / 2)
    kept, _ = _merged(store, "uniform", "regime.bn=keep")
    torch.testing.assert_close(
        kept.backbone.state_dict()[running[0]], (a[running[0]] + b[running[0]]) / 2
    )


def test_task_vector_methods_use_the_base(store):
    base = _backbone_state(store["base"])
    zero, _ = _merged(
        store, "task_arithmetic", f"regime.base={store['base'].name}", "regime.scaling=0"
    )
    for key, value in _params(zero).items():
        torch.testing.assert_close(value, base[key])
    for method in ("ties", "dare", "fisher"):
        extra = [] if method == "fisher" else [f"regime.base={store['base'].name}"]
        regime, _ = _merged(store, method, *extra, "regime.fisher_samples=16")
        assert all(torch.isfinite(v).all() for v in _params(regime).values()), method
    # Without regime.base, the ingredients' shared init_from is the base.
    inferred, _ = _merged(store, "task_arithmetic", "regime.scaling=0")
    assert inferred.base_id == store["base"].name and inferred.base_inferred
    for key, value in _params(inferred).items():
        torch.testing.assert_close(value, base[key])
    # ... and an error naming what each run started from when they share none.
    unshared = _cfg(
        store,
        "regime=merge",
        "regime.method=ties",
        f"regime.runs=[{store['a'].name},{store['base'].name}]",
    )
    message = _error(lambda: build_regime(unshared, ModelInput(1, 8, 8, 8)))
    assert "\n" not in message and "needs regime.base" in message
    assert f"{store['base'].name}: none" in message


def test_greedy_soup_reads_val_and_train_never_test(store):
    cfg = _merge_cfg(store, "greedy")
    datamodule = setup_data(cfg)
    regime = build_regime(cfg, ModelInput.of(datamodule))
    touched: list[str] = []
    split, loader = datamodule.split, datamodule.loader

    def spy_split(name):
        touched.append(name)
        return split(name)

    def spy_loader(name, *args, **kwargs):
        touched.append(name)
        return loader(name, *args, **kwargs)

    datamodule.split, datamodule.loader = spy_split, spy_loader
    regime.prepare(datamodule)
    assert "val" in touched and "test" not in touched
    assert 1 <= regime.merge_summary["merge/greedy/kept"] <= 2
    # The kept runs go to the record too, not only to the loggers.
    made, _ = regime.write_outputs(store["root"] / "unused", None)
    kept = made["merge/greedy/kept_runs"].split(",")
    assert len(kept) == made["merge/greedy/kept"] and set(kept) <= {
        store["a"].name,
        store["b"].name,
    }


def test_merging_runs_of_other_architectures_or_class_counts_is_a_one_line_error(store):
    a, mlp = store["a"].name, store["mlp"].name
    cfg = _cfg(store, "regime=merge", f"regime.runs=[{a},{mlp}]")
    message = _error(lambda: build_regime(cfg, ModelInput(1, 8, 8, 8)))
    assert "\n" not in message and a in message and mlp in message
    assert "different architectures" in message
    message = _error(lambda: build_regime(_merge_cfg(store, "uniform"), ModelInput(1, 8, 8, 9)))
    assert "\n" not in message and store["a"].name in message and "9 classes" in message


# -- merge: end to end ----------------------------------------------------------------


def test_a_merge_run_records_its_sources_and_the_ensemble_baseline(store):
    ids = sorted([store["a"].name, store["b"].name])
    outcome = run_in_store(
        store["root"], [*TINY, "regime=merge", f"regime.runs=[{ids[0]},{ids[1]}]"]
    )
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["sources"] == ids
    metrics = record["metrics"]
    for key in ("test/cls/acc", "merge/ensemble/test/cls/acc", "merge/ensemble/test/cls/nll"):
        assert 0.0 <= metrics[key] < float("inf"), key
    assert metrics["train/steps"] == 0
    # The checkpoint is the merge: the mean of the ingredients' parameters.
    state, a, b = _backbone_state(outcome.run_dir), *(_backbone_state(store[k]) for k in "ab")
    torch.testing.assert_close(
        state["body.0.0.weight"], (a["body.0.0.weight"] + b["body.0.0.weight"]) / 2
    )


# -- interpolation between two runs ---------------------------------------------------


def test_interpolate_needs_exactly_two_runs(store):
    ids = f"[{store['base'].name},{store['a'].name},{store['b'].name}]"
    cfg = _cfg(store, "regime=merge", "regime.method=interpolate", f"regime.runs={ids}")
    message = _error(lambda: build_regime(cfg, ModelInput(1, 8, 8, 10)))
    assert "\n" not in message and "exactly two runs" in message and "got 3" in message


def test_an_interpolation_run_writes_its_curve_picture_and_barriers(store):
    from sweeplab.regimes.interpolation import read_curve

    a, b = store["a"].name, store["b"].name
    outcome = run_in_store(
        store["root"],
        [
            *TINY,
            "eval.plots=true",
            "regime=merge",
            "regime.method=interpolate",
            f"regime.runs=[{a},{b}]",
            "regime.alphas=[0,0.5,1]",
            "regime.alpha=0.25",
            "regime.bn=keep",
        ],
    )
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["artifacts"]["interpolation"] == "interpolation.json"
    assert record["artifacts"]["plots/interpolation"] == "plots/interpolation.png"
    assert (outcome.run_dir / "plots" / "interpolation.png").stat().st_size > 0
    curve = read_curve(outcome.run_dir / "interpolation.json")
    assert curve["alphas"] == [0.0, 0.5, 1.0] and sorted(curve["runs"]) == sorted([a, b])
    # With bn=keep the end points are the two runs themselves, scored as their evaluation did.
    ends = {curve["runs"][0]: 0, curve["runs"][1]: -1}
    for run_id, index in ends.items():
        own = read_record(store["a" if run_id == a else "b"])["metrics"]
        for split in ("val", "test"):
            for metric in ("acc", "nll"):
                expected = own[f"{split}/cls/{metric}"]
                assert curve[split][metric][index] == pytest.approx(expected, abs=1e-5)
    metrics = record["metrics"]
    for split in ("val", "test"):
        for name in ("nll_barrier", "acc_barrier"):
            assert metrics[f"merge/interp/{split}/{name}"] >= 0.0
    # The checkpoint is θ at regime.alpha = 0.25, from the first run of the curve.
    state = _backbone_state(outcome.run_dir)
    first, second = (_backbone_state(store["a" if r == a else "b"]) for r in curve["runs"])
    key = "body.0.0.weight"
    torch.testing.assert_close(state[key], 0.75 * first[key] + 0.25 * second[key])


def test_best_is_the_ingredient_with_the_highest_val_accuracy_alone(store):
    regime, _ = _merged(store, "best")
    val = {d.name: read_record(d)["metrics"]["val/cls/acc"] for d in (store["a"], store["b"])}
    chosen = regime.merge_summary["merge/best/run"]
    assert val[chosen] == max(val.values())
    assert regime.merge_summary["merge/best/val_acc"] == pytest.approx(val[chosen])
    # The run as it is: its BatchNorm statistics too, not recomputed.
    own = _backbone_state(store["a" if chosen == store["a"].name else "b"])
    for key, value in regime.backbone.state_dict().items():
        assert torch.equal(value, own[key]), key
