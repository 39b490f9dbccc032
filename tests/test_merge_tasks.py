"""``regime=merge regime.tasks=true``: fine-tunes of one base on different class subsets
of digits, merged into one backbone, each task scored with its own head on its own test
set; and the base inferred from the ingredients' shared ``init_from``."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from sweeplab.assembly import ModelInput, build_regime, setup_data
from sweeplab.regimes import merge_tasks
from sweeplab.tracking.lineage import pin_sources
from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, run_in_store
from tests.test_merge import TINY, _backbone_state, _error

# Digits hold out 8 and 9 by default; the tasks split the other eight classes.
TASK_A = "data.held_out_classes=[3,4,5,6,7,8,9]"  # digits 0-2: 3 classes
TASK_B = "data.held_out_classes=[0,1,2,8,9]"  # digits 3-7: 5 classes


@pytest.fixture(scope="module")
def tasks_store(tmp_path_factory):
    """``{"root", "base", "a", "b", "other"}``: a base on eight digits, its fine-tunes on
    two class subsets (heads of 3 and 5 classes) and a task run of another backbone."""
    root = tmp_path_factory.mktemp("tasks_store")
    base = run_in_store(root, [*TINY, "seed=0"])
    assert base.status == "complete", base.error
    start = f"init_from={base.run_dir.name}"
    a = run_in_store(root, [*TINY, "seed=1", start, TASK_A])
    b = run_in_store(root, [*TINY, "seed=2", start, TASK_B, "regime.optimizer.lr=0.05"])
    other = run_in_store(root, [*TINY, "seed=3", TASK_B, "backbone.widths=[8,8]"])
    for outcome in (a, b, other):
        assert outcome.status == "complete", outcome.error
    dirs = {"base": base.run_dir, "a": a.run_dir, "b": b.run_dir, "other": other.run_dir}
    return {"root": root, **dirs}


def _cfg(store, *overrides: str):
    cfg = compose_config([f"paths.root_dir={store['root']}", *TINY, *overrides])
    pin_sources(cfg)
    return cfg


def _tasks_cfg(store, method: str, *overrides: str, data: str = TASK_A):
    ids = f"[{store['a'].name},{store['b'].name}]"
    return _cfg(
        store,
        "regime=merge",
        "regime.tasks=true",
        f"regime.runs={ids}",
        f"regime.method={method}",
        data,
        *overrides,
    )


def _merged(store, method: str, *overrides: str):
    cfg = _tasks_cfg(store, method, *overrides)
    datamodule = setup_data(cfg)
    regime = build_regime(cfg, ModelInput.of(datamodule))
    regime.prepare(datamodule)
    return regime


# -- pure pieces ----------------------------------------------------------------------


def test_summarise_divides_by_each_tasks_own_fine_tune_and_means_the_ratios():
    metrics = merge_tasks.summarise({"x": 0.5, "y": 0.9}, {"x": 1.0, "y": 0.75})
    assert metrics["merge/task/x/test/norm_acc"] == pytest.approx(0.5)
    assert metrics["merge/task/y/test/norm_acc"] == pytest.approx(1.2)
    assert metrics["merge/task/y/test/finetune_acc"] == pytest.approx(0.75)
    # The mean of the ratios (0.85), not the ratio of the means (0.7 / 0.875 = 0.8).
    assert metrics["merge/tasks/test/norm_acc"] == pytest.approx(0.85)
    assert metrics["merge/tasks/test/acc"] == pytest.approx(0.7)
    assert math.isnan(merge_tasks.summarise({"z": 0.3}, {"z": 0.0})["merge/task/z/test/norm_acc"])
    with pytest.raises(ValueError, match="same tasks"):
        merge_tasks.summarise({"x": 0.5}, {"y": 0.5})


def test_a_task_is_named_by_its_data_set_and_the_classes_it_kept():
    digits = {"name": "digits", "held_out_classes": [3, 4, 5, 6, 7, 8, 9]}
    assert merge_tasks.task_name(digits, 3) == "digits_c0-2"
    assert merge_tasks.task_name({"name": "mnist", "held_out_classes": [1, 3]}, 8) == (
        "mnist_c0_2_4-9"
    )
    assert merge_tasks.task_name({"name": "svhn", "held_out_classes": []}, 10) == "svhn"


# -- the regime -----------------------------------------------------------------------


def test_heads_stay_apart_and_the_body_is_merged(tasks_store):
    regime = _merged(tasks_store, "uniform", "regime.bn=keep")
    a, b = _backbone_state(tasks_store["a"]), _backbone_state(tasks_store["b"])
    assert a["head.weight"].shape[0] == 3 and b["head.weight"].shape[0] == 5
    names = regime.task_names
    assert sorted(names) == ["digits_c0-2", "digits_c3-7"]
    own = {"digits_c0-2": a, "digits_c3-7": b}
    for name, head in regime.task_heads.items():
        for key, value in head.state_dict().items():
            assert torch.equal(value, own[name][f"head.{key}"]), (name, key)
    state = regime.backbone.state_dict()
    body = [k for k in state if not k.startswith("head.") and torch.is_floating_point(state[k])]
    assert body
    for key in body:
        torch.testing.assert_close(state[key], (a[key] + b[key]) / 2)
    # The ordinary evaluation's head is that of the task whose data this run has (A).
    assert torch.equal(state["head.weight"], a["head.weight"])


def test_task_arithmetic_at_zero_is_the_base_body_with_each_tasks_head(tasks_store):
    base = _backbone_state(tasks_store["base"])
    explicit = _merged(
        tasks_store,
        "task_arithmetic",
        f"regime.base={tasks_store['base'].name}",
        "regime.scaling=0",
    )
    for key, value in explicit.backbone.named_parameters():
        if not key.startswith("head."):
            torch.testing.assert_close(value, base[key])
    # No regime.base: the ingredients' shared init_from is the base, and it says so.
    inferred = _merged(tasks_store, "ties")
    assert inferred.base_id == tasks_store["base"].name and inferred.base_inferred
    made = inferred.record_metrics()
    assert made["merge/base_run"] == tasks_store["base"].name and made["merge/base_inferred"] == 1
    given = _merged(tasks_store, "ties", f"regime.base={tasks_store['base'].name}")
    for (key, value), other in zip(
        inferred.backbone.state_dict().items(), given.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), key
    for method in ("dare", "fisher"):
        regime = _merged(tasks_store, method, "regime.fisher_samples=8")
        assert all(torch.isfinite(v).all() for v in regime.backbone.state_dict().values())


def test_each_task_is_scored_on_its_own_test_set_with_its_own_head(tasks_store):
    from sweeplab.regimes.loading import load_backbone

    regime = _merged(tasks_store, "uniform")
    metrics = regime.task_metrics()
    for letter, name in (("a", "digits_c0-2"), ("b", "digits_c3-7")):
        record = read_record(tasks_store[letter])
        data = setup_data(OmegaConf.create(record["config"]))
        images, labels = data.split("test")
        assert set(labels.tolist()) == set(range(3 if letter == "a" else 5))
        x = data.preprocess(images, train=False)
        with torch.no_grad():
            merged = regime.task_heads[name](regime.backbone.features(x)).argmax(1)
            own = load_backbone(tasks_store[letter])(x).argmax(1)
        acc = (merged == labels).double().mean().item()
        own_acc = (own == labels).double().mean().item()
        assert metrics[f"merge/task/{name}/test/acc"] == pytest.approx(acc)
        assert metrics[f"merge/task/{name}/test/finetune_acc"] == pytest.approx(own_acc)
        assert own_acc == pytest.approx(record["metrics"]["test/cls/acc"], abs=1e-6)
        assert metrics[f"merge/task/{name}/test/norm_acc"] == pytest.approx(acc / own_acc)


def test_task_mode_errors_are_one_line(tasks_store):
    a, b, other = (tasks_store[k].name for k in ("a", "b", "other"))
    model_input = ModelInput(1, 8, 8, 3)
    # Runs of different tasks without regime.tasks=true.
    plain = _cfg(tasks_store, "regime=merge", f"regime.runs=[{a},{b}]", TASK_A)
    message = _error(lambda: build_regime(plain, model_input))
    assert "\n" not in message and "regime.tasks=true" in message and a in message
    # A method that picks whole runs.
    message = _error(lambda: build_regime(_tasks_cfg(tasks_store, "greedy"), model_input))
    assert "\n" not in message and "regime.method=greedy" in message
    # This run's data is no task's.
    message = _error(
        lambda: build_regime(_tasks_cfg(tasks_store, "uniform", data="seed=0"), model_input)
    )
    assert "\n" not in message and "none of the tasks" in message and "digits_c0-2" in message
    # Another backbone: named, heads aside.
    cfg = _cfg(
        tasks_store, "regime=merge", "regime.tasks=true", f"regime.runs=[{a},{other}]", TASK_A
    )
    message = _error(lambda: build_regime(cfg, model_input))
    assert "\n" not in message and a in message and other in message
    assert "different architectures" in message and "head" not in message.split("at ")[-1]
    # A base to infer, but the ingredients do not share one init_from.
    cfg = _cfg(
        tasks_store,
        "regime=merge",
        "regime.tasks=true",
        "regime.method=ties",
        f"regime.runs=[{b},{tasks_store['base'].name}]",
        TASK_B,
    )
    message = _error(lambda: build_regime(cfg, ModelInput(1, 8, 8, 5)))
    assert "\n" not in message and "init_from" in message and "regime.base" in message


def test_a_task_merge_run_records_every_task_and_its_lineage(tasks_store):
    ids = sorted([tasks_store["a"].name, tasks_store["b"].name])
    overrides = [*TINY, "regime=merge", "regime.tasks=true", "regime.method=ties", TASK_A]
    outcome = run_in_store(tasks_store["root"], [*overrides, f"regime.runs=[{ids[0]},{ids[1]}]"])
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["sources"] == ids and record["config"]["regime"]["tasks"] is True
    metrics = record["metrics"]
    for name in ("digits_c0-2", "digits_c3-7"):
        for key in ("acc", "finetune_acc", "norm_acc"):
            assert 0.0 <= metrics[f"merge/task/{name}/test/{key}"] < float("inf"), (name, key)
    means = [metrics[f"merge/task/{n}/test/norm_acc"] for n in ("digits_c0-2", "digits_c3-7")]
    assert metrics["merge/tasks/test/norm_acc"] == pytest.approx(sum(means) / 2)
    # The ordinary evaluation is task A's, with its head: the same accuracy.
    assert metrics["test/cls/acc"] == pytest.approx(metrics["merge/task/digits_c0-2/test/acc"])
    assert metrics["merge/base_run"] == tasks_store["base"].name
    assert not any(key.startswith("merge/ensemble/") for key in metrics)
    # Every task's head is in the checkpoint, beside the merged backbone.
    state = torch.load(
        outcome.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )["state_dict"]
    assert state["task_heads.digits_c3-7.weight"].shape[0] == 5
