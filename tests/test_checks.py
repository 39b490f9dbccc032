"""Config-value checks: hand cases for every check, its boundaries and its message."""

from __future__ import annotations

import re

import numpy as np
import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeplab import checks
from sweeplab.augment import checks as augment_checks
from sweeplab.data import checks as data_checks


def fails(check, value, *args, key="group.option", **kwargs) -> str:
    """The message ``check`` raises for ``value``, after asserting it names key and value."""
    with pytest.raises(ValueError) as info:
        check(key, value, *args, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{key} "), message
    return message


# ----------------------------------------------------------------------- predicates
def test_is_int_and_is_real_leave_bools_out():
    assert checks.is_int(3) and checks.is_int(np.int64(3)) and checks.is_int(-1)
    assert not checks.is_int(True) and not checks.is_int(3.0) and not checks.is_int("3")
    assert checks.is_real(0.5) and checks.is_real(2) and checks.is_real(np.float32(0.5))
    assert not checks.is_real(False) and not checks.is_real("0.5") and not checks.is_real(None)


# ------------------------------------------------------------------------- integers
def test_positive_int():
    assert checks.positive_int("data.batch_size", 1) == 1
    value = checks.positive_int("data.batch_size", np.int64(8))
    assert value == 8 and type(value) is int
    for bad in (0, -3, 2.0, True, "4", None):
        message = fails(checks.positive_int, bad, key="data.batch_size")
        assert message == f"data.batch_size must be a positive integer, got {bad!r}"


def test_non_negative_int():
    assert checks.non_negative_int("augment.off_epoch", 0) == 0
    assert checks.non_negative_int("augment.off_epoch", 5) == 5
    for bad in (-1, 0.0, False, "0"):
        message = fails(checks.non_negative_int, bad, key="augment.off_epoch")
        assert message == f"augment.off_epoch must be a non-negative integer, got {bad!r}"


def test_seed_is_the_range_lightning_accepts():
    assert checks.seed("data.seed", 0) == 0
    assert checks.seed("data.seed", 2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32, 1.0, True):
        message = fails(checks.seed, bad, key="data.seed")
        assert message == f"data.seed must be an integer in [0, 2**32), got {bad!r}"


def test_positive_int_list():
    assert checks.positive_int_list("backbone.widths", [1, 32]) == [1, 32]
    assert checks.positive_int_list("backbone.widths", ListConfig([8, 16])) == [8, 16]
    assert checks.positive_int_list("backbone.widths", (4,)) == [4]
    assert checks.positive_int_list("backbone.hidden", [], allow_empty=True) == []
    assert "non-empty" in fails(checks.positive_int_list, [], key="backbone.widths")
    for bad in ([0], [32, -1], [2.0], [True], "32", 32, None):
        message = fails(checks.positive_int_list, bad, key="backbone.widths")
        assert "must be a list of positive integers" in message


# -------------------------------------------------------------------------- numbers
def test_positive():
    assert checks.positive("augment.alpha", 1e-9) == 1e-9
    value = checks.positive("augment.alpha", 2)
    assert value == 2.0 and type(value) is float
    for bad in (0, 0.0, -1, float("nan"), True, "1"):
        message = fails(checks.positive, bad, key="augment.alpha")
        assert message == f"augment.alpha must be > 0, got {bad!r}"


def test_non_negative():
    assert checks.non_negative("augment.decoupled_weight", 0) == 0.0
    assert checks.non_negative("augment.decoupled_weight", 0.1) == 0.1
    for bad in (-1e-9, float("nan"), False, "0"):
        message = fails(checks.non_negative, bad, key="augment.decoupled_weight")
        assert message == f"augment.decoupled_weight must be ≥ 0, got {bad!r}"


def test_probability_includes_both_ends():
    assert checks.probability("augment.prob", 0) == 0.0
    assert checks.probability("augment.prob", 1) == 1.0
    assert checks.probability("augment.prob", 0.5) == 0.5
    for bad in (-0.01, 1.01, float("nan"), True, "0.5"):
        message = fails(checks.probability, bad, key="augment.prob")
        assert message == f"augment.prob must be in [0, 1], got {bad!r}"


def test_fraction_below_one_includes_zero_but_not_one():
    assert checks.fraction_below_one("backbone.dropout", 0) == 0.0
    assert checks.fraction_below_one("backbone.dropout", 0.999) == 0.999
    for bad in (1, 1.0, -0.1, float("nan"), False, "0.1"):
        message = fails(checks.fraction_below_one, bad, key="backbone.dropout")
        assert message == f"backbone.dropout must be in [0, 1), got {bad!r}"


def test_open_fraction_excludes_both_ends():
    assert checks.open_fraction("data.val_fraction", 0.1) == 0.1
    assert checks.open_fraction("data.val_fraction", 1e-6) == 1e-6
    for bad in (0, 0.0, 1, 1.0, 1.2, float("nan"), True, "0.1"):
        message = fails(checks.open_fraction, bad, key="data.val_fraction")
        assert message == f"data.val_fraction must be in (0, 1), got {bad!r}"


# ------------------------------------------------------------------- other values
def test_boolean_takes_only_real_booleans():
    assert checks.boolean("data.horizontal_flip", True) is True
    assert checks.boolean("data.horizontal_flip", False) is False
    for bad in ("false", "true", 0, 1, None):
        message = fails(checks.boolean, bad, key="data.horizontal_flip")
        assert message == f"data.horizontal_flip must be true or false, got {bad!r}"


def test_one_of():
    assert checks.one_of("augment.lam_mode", "pair", ("batch", "pair")) == "pair"
    assert checks.one_of("data.dataset", "mnist", {"mnist": 1, "svhn": 2}) == "mnist"
    message = fails(checks.one_of, "pixel", ("batch", "pair"), key="augment.lam_mode")
    assert message == "augment.lam_mode must be one of batch, pair; got 'pixel'"
    assert "1, 3; got 2" in fails(checks.one_of, 2, (1, 3))


def test_nonempty_str():
    assert checks.nonempty_str("backbone.name", "resnet18") == "resnet18"
    for bad in ("", "   ", 18, None):
        message = fails(checks.nonempty_str, bad, key="backbone.name")
        assert message == f"backbone.name must be a non-empty string, got {bad!r}"


def test_mapping_gives_plain_containers():
    assert checks.mapping("backbone.model_kwargs", None) == {}
    assert checks.mapping("backbone.model_kwargs", {"a": 1}) == {"a": 1}
    resolved = checks.mapping(
        "backbone.model_kwargs", OmegaConf.create({"depths": [1, 2], "b": "${.depths}"})
    )
    assert resolved == {"depths": [1, 2], "b": [1, 2]}
    assert type(resolved["depths"]) is list and not isinstance(resolved, DictConfig)
    for bad in ([1], "a=1", 3):
        message = fails(checks.mapping, bad, key="backbone.model_kwargs")
        assert message == f"backbone.model_kwargs must be a mapping, got {bad!r}"


# ------------------------------------------------------------------ mixer options
def test_scale_range():
    assert augment_checks.scale_range("augment.scale", (0.1, 1)) == (0.1, 1.0)
    assert augment_checks.scale_range("augment.scale", [0.5, 0.5]) == (0.5, 0.5)
    assert augment_checks.optional_scale_range("augment.minmax", None) is None
    for bad in ((0, 0.5), (0.2, 1.5), (0.8, 0.2), (0.5,), (True, 1), 0.5, "ab"):
        message = fails(augment_checks.scale_range, bad, key="augment.scale")
        assert "must be a pair [min, max] with 0 < min ≤ max ≤ 1" in message


def test_stage_list():
    assert augment_checks.stage_list("augment.stages", None) is None
    assert augment_checks.stage_list("augment.stages", [3, 1]) == [1, 3]
    assert "include_input" in fails(augment_checks.stage_list, [0, 1], key="augment.stages")
    for bad in ([], "1", [1, 1], [-1], [1.0]):
        fails(augment_checks.stage_list, bad, key="augment.stages")


# -------------------------------------------------------------------- data options
def test_channels():
    assert data_checks.channels("data.channels", 1) == 1
    assert data_checks.channels("data.channels", 3) == 3
    for bad in (2, 4, 0, True, 3.0, "3"):
        message = fails(data_checks.channels, bad, key="data.channels")
        assert message == f"data.channels must be 1 or 3, got {bad!r}"


def test_image_size():
    assert data_checks.image_size("data.image_size", None) is None
    assert data_checks.image_size("data.image_size", 32) == (32, 32)
    assert data_checks.image_size("data.image_size", ListConfig([24, 32])) == (24, 32)
    assert "positive integer" in fails(data_checks.image_size, 0, key="data.image_size")
    for bad in ([32], [32, 0], [32.0, 32], "32", True):
        message = fails(data_checks.image_size, bad, key="data.image_size")
        assert "a positive integer or a pair [H, W]" in message


def test_per_channel():
    assert data_checks.per_channel("data.mean", None, 3, default=0.0) == (0.0, 0.0, 0.0)
    assert data_checks.per_channel("data.std", [0.5], 1, default=1.0, positive=True) == (0.5,)
    for bad in ([0.5, 0.5], "0.5", [float("inf")], [True]):
        fails(data_checks.per_channel, bad, 1, default=0.0, key="data.mean")
    message = fails(data_checks.per_channel, [0.0], 1, default=1.0, positive=True, key="data.std")
    assert message == "data.std must be > 0 for every channel, got [0.0]"


def test_class_list_and_its_range():
    key = "data.held_out_classes"
    assert data_checks.class_list(key, None) == ()
    assert data_checks.class_list(key, [9, 8]) == (8, 9)
    for bad in ([1, 1], [-1], [1.5], "8", 8):
        fails(data_checks.class_list, bad, key=key)
    data_checks.held_out_classes_within(key, (7, 8), 10)
    with pytest.raises(ValueError, match=re.escape(f"{key} must be labels in 0..9")):
        data_checks.held_out_classes_within(key, (10,), 10)
    with pytest.raises(ValueError, match=re.escape(f"{key} must leave at least 2")):
        data_checks.held_out_classes_within(key, tuple(range(9)), 10)
