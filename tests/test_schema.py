"""The one check of every config value: every shipped key has a rule, every shipped
option passes, and a bad value is named with its full key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeplab.configs import config_dir
from sweeplab.schema import check_config, config_values, rule_for
from sweeplab.tables.spec import load_spec
from tests.conftest import compose_config

CONF = config_dir()
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# Values an option needs that have no default (the runs it is made from, a subnet's
# architecture).
REQUIRED = {
    "regime=ensemble_from_runs": "regime.runs=abc123",
    "regime=distill": "regime.teacher=abc123",
    "regime=merge": "regime.runs=abc123",
    "backbone=subnet": "backbone.arch=d1w1k3-d2w0.5k5-d1w0.75k3",
}


def _option_overrides() -> list[list[str]]:
    """One override list per option of every group, nested groups included."""
    cases = []
    for group in ("data", "backbone", "augment", "regime", "trainer", "logger", "callbacks"):
        for option in sorted((CONF / group).glob("*.yaml")):
            choice = f"{group}={option.stem}"
            cases.append([choice, *([REQUIRED[choice]] if choice in REQUIRED else [])])
    for nested in ("optimizer", "scheduler"):
        for option in sorted((CONF / "regime" / nested).glob("*.yaml")):
            cases.append([f"regime/{nested}={option.stem}"])
    for group in ("debug", "experiment"):
        for option in sorted((CONF / group).glob("*.yaml")):
            cases.append([f"{group}={option.stem}"])
    return cases


CASES = _option_overrides()


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_every_key_of_every_option_has_a_rule_and_its_default_passes(overrides) -> None:
    cfg = compose_config(overrides)
    unruled = [
        v.key for v in config_values(cfg) if not isinstance(v.value, dict) and not rule_for(v.key)
    ]
    assert unruled == [], f"keys without a rule in sweeplab.schema: {unruled}"
    check_config(cfg)


def test_every_table_spec_cell_passes() -> None:
    cells = set()
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        spec = load_spec(path)
        base = tuple(o.text for o in spec.base)
        cells |= {base + tuple(o.text for o in need.overrides) for need in spec.requires}
        for row in spec.rows:
            for column in spec.columns:
                overrides = (*row.overrides, *column.entry.overrides)
                cells.add(base + tuple(o.text for o in overrides))
    assert len(cells) > 10
    for overrides in sorted(cells):
        check_config(compose_config(list(overrides)))


# One bad value per config group at least: (override, what the message must say).
BAD_VALUES = [
    ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
    ("seed=abc", "seed must be an integer in [0, 2**32), got 'abc'"),
    ("eval_checkpoint=first", "eval_checkpoint must be one of last, best; got 'first'"),
    ("trainer.max_epochs=abc", "trainer.max_epochs must be a positive integer, got 'abc'"),
    ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer, got 0"),
    ("trainer.precision=banana", "trainer.precision must be one of 16-true"),
    ("trainer.accelerator=gpus", "trainer.accelerator must be one of cpu, gpu"),
    ("trainer.devices=0", "trainer.devices must be a device count ≥ 1"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches must be a number"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be > 0, got -1"),
    ("trainer.deterministic=maybe", "trainer.deterministic must be true, false or warn"),
    ("regime.optimizer.lr=abc", "regime.optimizer.lr must be > 0, got 'abc'"),
    ("regime.optimizer.momentum=1.5", "regime.optimizer.momentum must be in [0, 1), got 1.5"),
    ("regime.scheduler.warmup_epochs=-2", "regime.scheduler.warmup_epochs must be a non-negative"),
    ("regime.label_smoothing=1", "regime.label_smoothing must be in [0, 1), got 1"),
    ("data.batch_size=abc", "data.batch_size must be a positive integer, got 'abc'"),
    ("data.val_fraction=1.5", "data.val_fraction must be in (0, 1), got 1.5"),
    ("data.horizontal_flip=maybe", "data.horizontal_flip must be true or false, got 'maybe'"),
    ("data.std=[0]", "data.std must be > 0 for every channel"),
    ("backbone.widths=abc", "backbone.widths must be a list of positive integers, got 'abc'"),
    ("backbone.dropout=1.0", "backbone.dropout must be in [0, 1), got 1.0"),
    ("augment=mixup augment.alpha=-1", "augment.alpha must be > 0, got -1"),
    ("augment=cutmix augment.prob=2", "augment.prob must be in [0, 1], got 2"),
    ("eval.calibration.n_bins=abc", "eval.calibration.n_bins must be a positive integer"),
    ("eval.shift.severities=[0,6]", "eval.shift.severities[0] must be an integer in 1..5, got 0"),
    ("eval.ood.fit_split=test", "eval.ood.fit_split must be one of train, val; got 'test'"),
    ("eval.plots=yes", "eval.plots must be true or false, got 'yes'"),
    (
        "callbacks=early_stopping callbacks.early_stopping.patience=-1",
        "callbacks.early_stopping.patience must be a non-negative integer, got -1",
    ),
    ("callbacks.model_checkpoint.mode=up", "callbacks.model_checkpoint.mode must be one of min"),
    ("logger=wandb logger.wandb.project=''", "logger.wandb.project must be a non-empty string"),
    ("logger=wandb logger.wandb.offline=sometimes", "logger.wandb.offline must be true or false"),
    ("paths.runs_dir=7", "paths.runs_dir must be a string, got 7"),
    ("regime=ensemble regime.num_members=1", "regime.num_members must be an integer ≥ 2, got 1"),
    ("regime=distill", "regime.teacher has no value and needs one: add regime.teacher=<value>"),
    ("regime=distill regime.teacher=x regime.temperature=0", "regime.temperature must be > 0"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_is_named_with_its_key_value_and_what_is_allowed(override, message) -> None:
    cfg = compose_config(override.split(" "))
    with pytest.raises(ValueError) as caught:
        check_config(cfg)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_only_the_named_groups_are_checked() -> None:
    cfg = compose_config(["seed=-1", "eval.calibration.n_bins=0"])
    with pytest.raises(ValueError, match=r"eval\.calibration\.n_bins"):
        check_config(cfg, groups=["eval"])
    check_config(compose_config(["seed=-1"]), groups=["eval"])


def test_a_key_without_a_rule_passes_for_a_users_own_component() -> None:
    cfg = compose_config(["+backbone.my_option=anything"])
    assert rule_for("backbone.my_option") is None
    check_config(cfg)


def test_free_mappings_are_checked_whole_not_walked() -> None:
    cfg = compose_config(["backbone=timm", "+backbone.model_kwargs.drop_rate=0.1"])
    keys = [value.key for value in config_values(cfg)]
    assert "backbone.model_kwargs" in keys
    assert "backbone.model_kwargs.drop_rate" not in keys
    check_config(cfg)


def test_lightning_accepts_every_precision_the_schema_allows() -> None:
    from typing import get_args

    from lightning_fabric.connector import _PRECISION_INPUT

    from sweeplab.schema import PRECISIONS

    lightning = {a for part in get_args(_PRECISION_INPUT) for a in get_args(part)}
    assert set(PRECISIONS) <= lightning
