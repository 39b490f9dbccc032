"""Implicit ensembles: BatchEnsemble, Packed-Ensembles, MC-dropout and snapshot ensembles.

Each layer conversion is checked against the plain layers it stands for, each regime's
randomness against its seed, and each regime once end to end through ``execute``.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sweeplab.assembly import ModelInput, build_regime
from sweeplab.evaluation.detectors.base import LinearHead
from sweeplab.models import MLP, SmallCNN, count_parameters
from sweeplab.models.backbone import Backbone
from sweeplab.models.implicit_ensembles import (
    BatchEnsembleLayer,
    PackedLinear,
    replace_layers,
    to_batch_ensemble,
    to_packed,
)
from sweeplab.regimes.batch_ensemble import BatchEnsemble
from sweeplab.regimes.loading import load_model
from sweeplab.regimes.mc_dropout import MCDropout
from sweeplab.regimes.packed import Packed, probe_input
from sweeplab.regimes.snapshot import Snapshot
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import read_record
from sweeplab.train import execute
from tests.conftest import compose_config

TINY = [
    "trainer.max_epochs=1",
    "data.val_fraction=0.2",
    "backbone.widths=[8,16]",
    "eval.shift.corruptions=[gaussian_noise]",
    "eval.shift.severities=[1]",
    "eval.plots=false",
    "eval.calibration.calibrators=[ts]",
    "eval.ood.detectors=[msp,mutual_info,knn]",
    "data.train_subset=256",
    "eval.ood.fit_max_samples=256",
]
INPUT = ModelInput(1, 8, 8, 4)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def small_cnn(**options) -> SmallCNN:
    return SmallCNN(num_classes=4, in_chans=1, image_size=8, widths=(8, 16), **options)


def mlp(**options) -> MLP:
    return MLP(num_classes=4, in_chans=1, image_size=8, hidden=(8,), **options)


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# -- BatchEnsemble ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer", [nn.Linear(6, 3), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, groups=2)]
)
def test_one_member_with_identity_fast_weights_is_the_plain_layer(layer):
    x = torch.randn(2, 6) if isinstance(layer, nn.Linear) else torch.randn(2, 4, 5, 5)
    expected = layer(x)
    batch_ensemble = BatchEnsembleLayer(layer, num_members=1)
    torch.testing.assert_close(batch_ensemble(x), expected)


@pytest.mark.parametrize("make", [small_cnn, mlp])
def test_one_member_with_identity_fast_weights_is_the_whole_backbone(make):
    backbone = make().eval()
    converted = to_batch_ensemble(backbone, num_members=1, fast_init="ones").eval()
    x = images()
    torch.testing.assert_close(converted(x), backbone(x))
    torch.testing.assert_close(converted.features(x), backbone.features(x))


@pytest.mark.parametrize(
    "layer", [nn.Linear(6, 3), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, groups=2)]
)
def test_member_m_is_a_plain_layer_with_weight_w_times_s_r(layer):
    members = 3
    plain = layer
    weight = plain.weight.detach().clone()
    batch_ensemble = BatchEnsembleLayer(plain, members)
    generators = [torch.Generator().manual_seed(m) for m in range(members)]
    batch_ensemble.init_fast_weights("normal", 0.5, generators)
    with torch.no_grad():
        batch_ensemble.bias.add_(torch.randn_like(batch_ensemble.bias))
    x = torch.randn(2, 6) if isinstance(layer, nn.Linear) else torch.randn(2, 4, 5, 5)
    out = batch_ensemble(x.repeat(members, *([1] * (x.ndim - 1)))).view(members, 2, -1)
    for m in range(members):
        r, s, b = batch_ensemble.r[m], batch_ensemble.s[m], batch_ensemble.bias[m]
        if isinstance(layer, nn.Linear):
            expected = F.linear(x, weight * s[:, None] * r[None, :], b)
        else:  # output channel o reads the input channels of its group
            groups, per_group = layer.groups, weight.shape[1]
            group_of = torch.arange(weight.shape[0]) // (weight.shape[0] // groups)
            r_rows = torch.stack([r[g * per_group : (g + 1) * per_group] for g in group_of])
            scaled = weight * (s[:, None] * r_rows)[:, :, None, None]
            expected = layer._conv_forward(x, scaled, b)
        torch.testing.assert_close(out[m], expected.flatten(1), rtol=1e-5, atol=1e-5)
        member_weight, member_bias = batch_ensemble.member_weight(m)
        torch.testing.assert_close(member_bias, b)
        if isinstance(layer, nn.Linear):
            torch.testing.assert_close(member_weight, weight * s[:, None] * r[None, :])
        else:
            torch.testing.assert_close(member_weight, scaled)


def test_batch_ensemble_members_and_their_heads():
    regime = build_regime(
        compose_config(["regime=batch_ensemble", "backbone.widths=[8,16]"]), INPUT
    )
    regime.eval()
    x = images()
    logits, features = regime.predict_eval(x)
    assert logits.shape == (5, 4, 4) and features.shape == (5, 4, 16)
    assert not torch.allclose(logits[:, 0], logits[:, 1])  # random-sign fast weights differ
    heads = regime.member_heads()
    assert len(heads) == 4
    for m, head in enumerate(heads):
        linear = LinearHead.from_module(head)
        expected = features[:, m] @ linear.weight.T + linear.bias
        torch.testing.assert_close(expected, logits[:, m], rtol=1e-4, atol=1e-4)
    # The same seed gives the same members.
    again = build_regime(compose_config(["regime=batch_ensemble", "backbone.widths=[8,16]"]), INPUT)
    torch.testing.assert_close(again.eval().predict_eval(x)[0], logits)


# -- Packed-Ensembles -------------------------------------------------------------------


def test_packed_linear_is_the_block_diagonal_of_its_groups():
    layer = PackedLinear(6, 4, groups=2, bias=True)
    nn.init.normal_(layer.weight)
    nn.init.normal_(layer.bias)
    x = torch.randn(3, 6)
    blocks = layer.weight.view(2, 2, 3)
    dense = torch.block_diag(*blocks)
    torch.testing.assert_close(layer(x), F.linear(x, dense, layer.bias))
    per_group = [F.linear(x[:, 3 * g : 3 * g + 3], blocks[g]) for g in range(2)]
    torch.testing.assert_close(layer(x), torch.cat(per_group, 1) + layer.bias)


def member_of(packed: nn.Module, member: int, members: int, first: str) -> nn.Module:
    """Member ``member`` of a packed model as a plain model of its own slices of every layer."""
    import copy

    model = copy.deepcopy(packed)

    def rows(tensor, count):
        size = tensor.shape[0] // count
        return tensor[member * size : (member + 1) * size].clone()

    def convert(path, module):
        if isinstance(module, nn.Conv2d):
            is_first = path == first
            groups = 1 if is_first else module.groups // members
            ins = module.in_channels if is_first else module.in_channels // members
            conv = nn.Conv2d(
                ins, module.out_channels // members, module.kernel_size,
                stride=module.stride, padding=module.padding, groups=groups,
                bias=module.bias is not None,
            )  # fmt: skip
            conv.weight.data = rows(module.weight.data, members)
            if module.bias is not None:
                conv.bias.data = rows(module.bias.data, members)
            return conv
        if isinstance(module, PackedLinear):
            is_first = path == first
            ins = module.in_features if is_first else module.in_features // members
            groups = 1 if is_first else module.groups // members
            linear = PackedLinear(ins, module.out_features // members, groups, True)
            linear.weight.data = rows(module.weight.data, members)
            linear.bias.data = rows(module.bias.data, members)
            return linear
        if isinstance(module, nn.BatchNorm2d):
            norm = nn.BatchNorm2d(module.num_features // members)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).data = rows(getattr(module, name).data, members)
            return norm
        return None

    replace_layers(model, convert)
    return model.eval()


@pytest.mark.parametrize(
    ("make", "first", "gamma"), [(small_cnn, "body.0.0", 2), (mlp, "body.1", 1)]
)
def test_a_packed_model_is_m_independent_alpha_wide_members(make, first, gamma):
    members = 2
    backbone = make()
    packed = to_packed(backbone, probe_input(backbone), 2.0, gamma, members, seed=3).eval()
    for module in packed.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    x = images()
    logits = packed(x).view(5, members, -1)
    features = packed.features(x).view(5, members, -1)
    for m in range(members):
        alone = member_of(packed, m, members, first)
        torch.testing.assert_close(alone(x), logits[:, m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(alone.features(x), features[:, m], rtol=1e-5, atol=1e-5)


def torch_uncertainty_params(ins, outs, kernel, alpha, members, gamma, first, last, bias):
    """PackedConv2d / PackedLinear's parameter count, by torch-uncertainty's definition."""
    extended_in = int(ins * (1 if first else alpha))
    extended_out = int(outs * (members if last else alpha))
    groups = 1 if first else members * gamma
    return extended_out * (extended_in // groups) * kernel * kernel + (extended_out if bias else 0)


def test_packed_parameter_count_matches_torch_uncertainty():
    alpha, gamma, members = 2, 2, 2
    packed = Packed(small_cnn(), sgd, num_members=members, alpha=alpha, gamma=gamma)
    layers = [
        torch_uncertainty_params(1, 8, 3, alpha, members, gamma, True, False, False),
        torch_uncertainty_params(8, 16, 3, alpha, members, gamma, False, False, False),
        torch_uncertainty_params(16, 4, 1, alpha, members, 1, False, True, True),  # classifier
    ]
    norms = 2 * (8 * alpha) + 2 * (16 * alpha)
    assert count_parameters(packed) == sum(layers) + norms


def test_packed_member_heads_read_their_feature_chunks():
    regime = Packed(small_cnn(), sgd, num_members=2, alpha=2, gamma=1).eval()
    logits, features = regime.predict_eval(images())
    assert logits.shape == (5, 2, 4) and features.shape == (5, 2, 16)
    for m, head in enumerate(regime.member_heads()):
        linear = LinearHead.from_module(head)
        torch.testing.assert_close(
            features[:, m] @ linear.weight.T + linear.bias, logits[:, m], rtol=1e-4, atol=1e-4
        )


class NormedMLP(Backbone):
    """A backbone with a LayerNorm, which mixes channels across packed members."""

    def __init__(self) -> None:
        super().__init__(num_classes=4, in_chans=1, image_size=8, name="normed")
        self.body = nn.Sequential(nn.Flatten(1), nn.Linear(64, 8), nn.LayerNorm(8))
        self.num_features = 8
        self.head = nn.Linear(8, 4)

    def features(self, x):
        return self.body(x)


# -- MC-dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("placement", ["head", "all"])
def test_mc_dropout_passes_differ_and_repeat_run_to_run(placement):
    def build():
        return MCDropout(
            small_cnn(), sgd, dropout=0.3, placement=placement, num_passes=4, seed=1
        ).eval()

    regime, x = build(), images()
    state = torch.random.get_rng_state()
    logits, features = regime.predict_eval(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is left alone
    assert logits.shape == (5, 4, 4) and features.shape == (5, 4, 16)
    assert not torch.allclose(logits[:, 0], logits[:, 1])
    torch.testing.assert_close(regime.predict_eval(x)[0], logits)
    other = build()
    other.load_state_dict(regime.state_dict())
    torch.testing.assert_close(other.predict_eval(x)[0], logits)
    for module in regime.modules():  # BatchNorm stays in eval mode during the passes
        assert not module.training


@pytest.mark.parametrize("placement", ["head", "all"])
def test_mc_dropout_without_dropout_is_the_deterministic_model(placement):
    regime = MCDropout(small_cnn(), sgd, dropout=0.0, placement=placement, num_passes=3).eval()
    x = images()
    logits, _ = regime.predict_eval(x)
    for t in range(3):
        torch.testing.assert_close(logits[:, t], regime.backbone(x))


# -- snapshot ensembles -----------------------------------------------------------------


class Recorder(pl.Callback):
    """The learning rate of every step and the backbone's weights at every epoch end."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.weights: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, module):
        self.weights.append({k: v.clone() for k, v in module.backbone.state_dict().items()})


def test_snapshot_keeps_the_weights_at_each_cycle_end_and_restarts_the_lr():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(24, 1, 8, 8), torch.randint(0, 4, (24,)))
    regime = Snapshot(mlp(), sgd, cycles=2)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(regime, DataLoader(data, batch_size=8))
    assert int(regime.snapshots_taken) == 2
    for k, epoch in enumerate((1, 3)):  # two epochs per cycle
        snapshot = regime.snapshots[k].state_dict()
        for key, value in recorder.weights[epoch].items():
            torch.testing.assert_close(snapshot[key], value)
    steps = 3 * 2  # batches per epoch × epochs per cycle
    cycle_lrs = [recorder.lrs[:steps], recorder.lrs[steps:]]
    for lrs in cycle_lrs:
        assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in itertools.pairwise(lrs))
    assert cycle_lrs[0] == pytest.approx(cycle_lrs[1])
    regime.eval()
    logits, features = regime.predict_eval(images())
    assert logits.shape == (5, 2, 4) and features.shape == (5, 2, 8)
    torch.testing.assert_close(logits[:, 1], regime.backbone(images()))


def test_snapshot_refuses_to_evaluate_before_its_last_cycle():
    regime = Snapshot(mlp(), sgd, cycles=2).eval()
    with pytest.raises(RuntimeError, match=r"0 of regime\.cycles=2 snapshots"):
        regime.predict_eval(images())


# -- bad values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: BatchEnsemble(small_cnn(), sgd, num_members=1), "regime.num_members"),
        (lambda: BatchEnsemble(small_cnn(), sgd, fast_init="zeros"), "regime.fast_init"),
        (lambda: Packed(small_cnn(), sgd, num_members=1), "regime.num_members"),
        (
            lambda: Packed(small_cnn(), sgd, num_members=4, alpha=1.5, gamma=2),
            "regime.alpha, regime.gamma and regime.num_members",
        ),
        (
            lambda: Packed(small_cnn(), sgd, num_members=3, alpha=1),
            "regime.alpha, regime.gamma and regime.num_members",
        ),
        (lambda: Packed(small_cnn(), sgd, gamma=0), "regime.gamma"),
        (lambda: Packed(NormedMLP(), sgd, num_members=2), "backbone 'normed'.*LayerNorm"),
        (lambda: MCDropout(small_cnn(), sgd, dropout=1.0), "regime.dropout"),
        (lambda: MCDropout(small_cnn(), sgd, num_passes=1), "regime.num_passes"),
        (lambda: MCDropout(small_cnn(), sgd, placement="nowhere"), "regime.placement"),
        (lambda: Snapshot(small_cnn(), sgd, cycles=1), "regime.cycles"),
    ],
)
def test_bad_values_fail_with_a_one_line_error_naming_the_key(build, match):
    with pytest.raises(ValueError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


# -- end to end -------------------------------------------------------------------------


def _run(store: Path, *overrides: str):
    cfg = compose_config(
        [f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *overrides]
    )
    run_dir = store / "runs" / cfg.name / compute_run_id(cfg)
    return execute(cfg, run_dir, list(overrides))


def test_snapshot_cycles_must_divide_the_epochs_before_training(tmp_path):
    outcome = _run(tmp_path, *TINY, "regime=snapshot", "regime.cycles=2")
    assert outcome.status == "failed"
    assert "trainer.max_epochs=1" in outcome.error and "regime.cycles=2" in outcome.error
    assert read_record(outcome.run_dir).get("metrics", {}).get("train/steps") is None


@pytest.mark.parametrize(
    ("regime", "members", "extra"),
    [
        ("batch_ensemble", 2, ["regime.num_members=2", "augment=manifold_mixup"]),
        ("packed", 2, ["regime.num_members=2", "augment=cutmix"]),
        ("mc_dropout", 3, ["regime.num_passes=3", "regime.placement=all", "augment=mixup"]),
        ("snapshot", 2, ["regime.cycles=2", "trainer.max_epochs=2"]),
    ],
)
def test_each_regime_trains_evaluates_records_and_loads(tmp_path, regime, members, extra):
    outcome = _run(tmp_path, *TINY, f"regime={regime}", *extra)
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["status"] == "complete" and record["metrics"]["train/steps"] > 0
    assert 0.0 <= record["metrics"]["test/cls/acc"] <= 1.0
    assert "ood/near/knn/auroc" in record["metrics"]
    cache = torch.load(outcome.run_dir / "eval_cache" / "test.pt", weights_only=True)
    assert cache["member_logits"].shape[1] == members
    model = load_model(outcome.run_dir)
    assert model.regime_name == regime and not model.training
    logits, _ = model.predict_eval(torch.zeros(3, 1, 8, 8))
    assert logits.shape[1] == members and math.isfinite(float(logits.sum()))
