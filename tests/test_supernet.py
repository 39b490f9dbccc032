"""The elastic supernet, its subnets and supernet training (regime=supernet)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sweeplab.assembly import BackboneFactory, ModelInput
from sweeplab.configs import config_dir
from sweeplab.models.batchnorm import batch_statistics, batchnorm_layers
from sweeplab.models.channel_order import channel_groups, sort_channels
from sweeplab.models.search_space import SearchSpace, StageChoice, encode, parse
from sweeplab.models.subnet_scoring import scoring_subnet
from sweeplab.models.supernet import Subnet, Supernet
from sweeplab.regimes.distill_losses import adaptive_alpha_loss, alpha_divergence
from sweeplab.regimes.supernet import SupernetTraining
from tests.conftest import compose_config, run_in_store

DIGITS = ModelInput(channels=1, height=8, width=8, num_classes=10)
SMALL = {"widths": [8, 16], "stem_width": 8}


def supernet(**options) -> Supernet:
    torch.manual_seed(0)
    return Supernet(num_classes=10, in_chans=1, image_size=8, **{**SMALL, **options})


def trained_statistics(net: Supernet, steps: int = 3) -> Supernet:
    """Run a few train-mode passes of random subnets, so running statistics are not trivial."""
    generator = torch.Generator().manual_seed(1)
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            with net.using(net.space.sample(generator)):
                net(torch.randn(16, 1, 8, 8) * 2 + 1)
    return net.eval()


def test_architectures_round_trip_through_their_text_and_bad_ones_are_named():
    space = supernet().space
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        arch = space.sample(generator)
        assert space.decode(encode(arch)) == arch
    assert encode(space.largest()) == "d2w1k5-d2w1k5"
    assert encode(space.smallest()) == "d1w0.5k3-d1w0.5k3"
    assert space.size() == (2 * 3 * 2) ** 2 == len(list(space.all_archs()))
    with pytest.raises(ValueError, match="stage 'd2w1' is not of the form"):
        parse("d2w1-d1w1k3")
    with pytest.raises(ValueError, match="stage 2 depth 3 is not one of"):
        space.decode("d1w1k3-d3w1k3")
    with pytest.raises(ValueError, match="has 1 stages but the space has 2"):
        space.decode("d1w1k3")
    with pytest.raises(ValueError, match=r"backbone\.kernels must hold odd kernel sizes"):
        SearchSpace.of([8], [1], [1.0], [4], 8)


def test_an_extracted_subnet_computes_what_the_supernet_computes_at_its_architecture():
    net = trained_statistics(supernet())
    x = torch.randn(5, 1, 8, 8)
    for arch in [net.space.largest(), net.space.smallest(), *list(net.space.all_archs())[::29]]:
        with torch.no_grad(), net.using(arch):
            expected = net(x)
        subnet = net.extract(arch)
        assert isinstance(subnet, Subnet) and subnet.arch == arch
        torch.testing.assert_close(subnet(x), expected, atol=1e-6, rtol=0)
    # the active architecture is restored after `using`
    assert net.arch == net.space.largest()


def test_a_subnet_is_the_leading_channels_and_centre_taps_of_the_supernet():
    net = supernet()
    arch = (StageChoice(1, 0.5, 3), StageChoice(2, 0.75, 5))
    state = net.subnet_state(arch)
    full = net.state_dict()
    conv = state["stages.0.blocks.0.conv1.weight"]
    assert conv.shape == (4, 8, 3, 3)
    torch.testing.assert_close(conv, full["stages.0.blocks.0.conv1.weight"][:4, :, 1:4, 1:4])
    assert state["stages.1.blocks.1.bn2.running_var"].shape == (12,)
    assert state["head.weight"].shape == (10, 12)
    assert "stages.0.blocks.1.conv1.weight" not in state  # depth 1: the second block is not used


def test_a_subnet_option_builds_from_the_config_and_takes_the_supernet_space():
    cfg = compose_config(["backbone=subnet", "backbone.arch=d1w0.5k3-d2w1k5-d1w0.75k3"])
    model = BackboneFactory(cfg.backbone, DIGITS)()
    assert isinstance(model, Subnet)
    assert encode(model.arch) == "d1w0.5k3-d2w1k5-d1w0.75k3"
    assert model.num_features == 48  # 0.75 × 64
    cfg = compose_config(["backbone=subnet", "backbone.arch=d1w0.5k3"])
    with pytest.raises(Exception, match="has 1 stages but the space has 3"):
        BackboneFactory(cfg.backbone, DIGITS)()


def test_bn_recalibration_changes_running_statistics_and_no_weight():
    net = trained_statistics(supernet())
    arch = net.space.smallest()
    before = net.extract(arch)
    images = torch.randn(64, 1, 8, 8) * 3 - 2
    after = scoring_subnet(net, arch, "recalibrate", images, batch_size=16)
    weights = {k for k, _ in after.named_parameters()}
    for key, value in after.state_dict().items():
        if key in weights:
            torch.testing.assert_close(value, before.state_dict()[key], rtol=0, atol=0)
    changed = [
        not torch.allclose(a.running_mean, b.running_mean)
        for a, b in zip(batchnorm_layers(after), batchnorm_layers(before), strict=True)
    ]
    assert all(changed)
    # the first BatchNorm's mean is the mean of the stem's output on those images
    stem = after.stem[0](images)
    torch.testing.assert_close(
        after.stem[1].running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4
    )
    # scoring never changes the supernet
    torch.testing.assert_close(net.subnet_state(arch), before.state_dict())


def test_batch_statistics_normalise_by_the_batch_and_keep_the_running_ones():
    net = trained_statistics(supernet())
    x = torch.randn(8, 1, 8, 8)
    saved = copy.deepcopy(net.state_dict())
    with batch_statistics(net):
        got = net(x)
    expected = copy.deepcopy(net).train()(x)
    torch.testing.assert_close(got, expected)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert not net.training


def test_sorting_channels_keeps_the_full_network_and_orders_importance():
    net = trained_statistics(supernet())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        before = net(x)
    sort_channels(net)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
    for group in channel_groups(net):
        importance = group.importance()
        assert bool((importance[:-1] >= importance[1:] - 1e-6).all())


def test_sorting_channels_permutes_the_optimizer_state_with_its_parameters():
    """Step then sort equals sort then step, momentum included."""

    def stepped(sort_first: bool) -> Supernet:
        net = trained_statistics(supernet())
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        x, y = torch.randn(8, 1, 8, 8), torch.randint(10, (8,))
        for step in range(3):
            if sort_first and step == 2:
                sort_channels(net, optimizer)
            optimizer.zero_grad()
            F.cross_entropy(net.train()(x), y).backward()
            optimizer.step()
            if not sort_first and step == 2:
                sort_channels(net, optimizer)
        return net.eval()

    x = torch.randn(4, 1, 8, 8)
    sorted_first, sorted_after = stepped(True), stepped(False)
    with torch.no_grad():
        torch.testing.assert_close(sorted_first(x), sorted_after(x), atol=1e-4, rtol=1e-4)


def test_the_alpha_divergence_has_its_limits_and_a_hand_computed_value():
    q_logits = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.1, 0.3]])
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    q = F.softmax(q_logits, dim=-1)
    kl_pq = (p * (p / q).log()).sum(-1)
    kl_qp = (q * (q / p).log()).sum(-1)
    torch.testing.assert_close(alpha_divergence(q_logits, p, 1.0, 1e9), kl_pq)
    torch.testing.assert_close(alpha_divergence(q_logits, p, 0.0, 1e9), kl_qp)
    torch.testing.assert_close(
        alpha_divergence(q_logits, p, 0.999999, 1e9), kl_pq, atol=1e-4, rtol=0
    )
    half_chi2 = 0.5 * (q * q / p - q).sum(-1)  # α = −1
    torch.testing.assert_close(alpha_divergence(q_logits, p, -1.0, 1e9), half_chi2)
    assert float(alpha_divergence(torch.log(p), p, -1.0, 5.0).abs().max()) < 1e-6
    expected = torch.maximum(half_chi2, kl_pq).mean()
    torch.testing.assert_close(adaptive_alpha_loss(q_logits, p, -1.0, 1.0, 1e9), expected)


def regime(**options) -> SupernetTraining:
    cfg = OmegaConf.merge(OmegaConf.load(config_dir() / "backbone" / "supernet.yaml"), SMALL)
    options.setdefault("optimizer", lambda params: torch.optim.SGD(params, lr=0.1))
    return SupernetTraining(BackboneFactory(cfg, DIGITS), **options)


def test_the_sandwich_always_holds_the_largest_and_smallest_and_draws_repeat():
    sandwich = regime(sampler="sandwich", num_random=2)
    space = sandwich.space
    seen = set()
    for epoch in range(3):
        for step in range(10):
            archs = sandwich.step_archs(epoch, step)
            assert len(archs) == 4
            assert archs[0] == space.largest() and archs[1] == space.smallest()
            assert archs == sandwich.step_archs(epoch, step)  # a resume draws the same
            seen.add(encode(archs[2]))
    assert len(seen) > 15  # the random ones differ from step to step
    uniform = regime(sampler="uniform")
    assert len(uniform.step_archs(0, 0)) == 1
    assert regime(seed=1).step_archs(0, 0) != sandwich.step_archs(0, 0)
    warm = regime(full_epochs=2, sort_channels=True)
    assert warm.step_archs(1, 5) == [space.largest()]
    assert len(warm.step_archs(2, 5)) == 4


def test_impossible_supernet_options_name_their_key():
    with pytest.raises(ValueError, match=r"regime\.sampler must be one of uniform, sandwich"):
        regime(sampler="greedy")
    with pytest.raises(ValueError, match=r"regime\.bn_calibration_images must be at most 2000"):
        regime(bn_calibration_images=5000)
    with pytest.raises(ValueError, match=r"needs regime\.full_epochs > 0"):
        regime(sort_channels=True)
    cfg = OmegaConf.load(config_dir() / "backbone" / "small_cnn.yaml")
    with pytest.raises(ValueError, match="use backbone=supernet"):
        SupernetTraining(BackboneFactory(cfg, DIGITS), optimizer=torch.optim.SGD)


TINY = [
    "backbone=supernet",
    "backbone.widths=[8,16]",
    "backbone.stem_width=8",
    "regime=supernet",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "data.train_subset=256",
    "data.val_fraction=0.2",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]


@pytest.fixture(scope="module")
def supernet_run(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("supernet")
    outcome = run_in_store(store, TINY)
    assert outcome.status == "complete", outcome.error
    return Path(outcome.run_dir)


def test_a_supernet_run_trains_evaluates_its_largest_subnet_and_logs_the_smallest(supernet_run):
    import json

    record = json.loads((supernet_run / "record.json").read_text())
    assert record["config"]["regime"]["sampler"] == "sandwich"
    assert 0.0 <= record["metrics"]["test/cls/acc"] <= 1.0
    with open(supernet_run / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/nas/smallest/acc")]
    assert len(rows) == 2  # one per epoch
    # the checkpoint holds the largest subnet's statistics as recalibrated before validation
    from sweeplab.regimes.loading import load_model

    model = load_model(supernet_run)
    assert isinstance(model.backbone, Supernet)
    assert model.backbone.arch == model.backbone.space.largest()


def test_an_inherited_subnet_scores_under_its_bn_policy_and_needs_a_source():
    from sweeplab.models.subnet_scoring import predict
    from sweeplab.regimes.inherited import InheritedSubnet

    net = trained_statistics(supernet())
    arch = "d1w0.5k3-d2w1k5"
    x = torch.randn(32, 1, 8, 8)
    for policy in ("recalibrate", "batch"):
        regime = InheritedSubnet(net.extract(arch), bn_policy=policy).eval()
        logits, features = regime.predict_eval(x)
        expected = predict(net.extract(arch).eval(), x, policy)
        torch.testing.assert_close(logits[:, 0], expected, rtol=0, atol=1e-6)
        assert features.shape[:2] == (32, 1)
    with pytest.raises(ValueError, match="needs init_from=<supernet run>"):
        InheritedSubnet(net.extract(arch)).prepare(None)
    with pytest.raises(ValueError, match=r"use backbone=subnet backbone\.arch=<arch>"):
        InheritedSubnet(net)
