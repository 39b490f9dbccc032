"""Deep ensembles trained jointly (``regime=ensemble``) and assembled from finished runs
(``regime=ensemble_from_runs``), and the lineage that names source runs by id."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sweeplab.assembly import BackboneFactory, ModelInput
from sweeplab.configs import config_dir
from sweeplab.regimes.ensemble import Ensemble, member_seed
from sweeplab.regimes.erm import ERM
from sweeplab.regimes.loading import load_model
from sweeplab.tracking.identity import compute_run_id, seed_block
from sweeplab.tracking.lineage import pin_sources
from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, run_in_store

DIGITS = ModelInput(channels=1, height=8, width=8, num_classes=10)
TINY = [
    "trainer.max_epochs=1",
    "data.val_fraction=0.2",
    "data.seed=0",
    "backbone.widths=[8,16]",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp,knn,vim]",
    "eval.plots=false",
]


def factory(option: str = "small_cnn", **overrides) -> BackboneFactory:
    cfg = OmegaConf.load(config_dir() / "backbone" / f"{option}.yaml")
    cfg = OmegaConf.merge(cfg, overrides)
    return BackboneFactory(cfg, DIGITS)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def ensemble(**options) -> Ensemble:
    options.setdefault("optimizer", sgd)
    return Ensemble(factory(widths=[8, 16]), **options)


def _run(store: Path, *overrides: str):
    return run_in_store(store, [*TINY, *overrides])


# -- regime=ensemble ------------------------------------------------------------------


def test_vectorised_and_looped_members_take_the_same_optimiser_steps():
    torch.manual_seed(0)
    looped = ensemble(num_members=3, seed=0, vectorize=False, shared_batches=True).double()
    torch.manual_seed(0)
    stacked = ensemble(num_members=3, seed=0, vectorize=True, shared_batches=True).double()
    assert looped.vectorized() is False and stacked.vectorized() is True
    optimizers = [sgd(looped.parameters()), sgd(stacked.parameters())]
    generator = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(16, 1, 8, 8, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=generator)
        for module, optimizer in zip((looped, stacked), optimizers, strict=True):
            module.train()
            optimizer.zero_grad()
            module.training_loss(x, y, step).backward()
            optimizer.step()
    for (name, a), b in zip(
        looped.state_dict().items(), stacked.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    # BatchNorm statistics moved, per member
    means = [m.body[0][1].running_mean for m in stacked.members]
    assert not torch.equal(means[0], torch.zeros_like(means[0]))
    assert not torch.allclose(means[0], means[1])


def test_member_zero_is_the_erm_model_and_the_others_have_their_own_seeds():
    torch.manual_seed(5)
    single = ERM(factory(widths=[8, 16]), sgd)
    torch.manual_seed(5)
    joint = ensemble(num_members=3, seed=5)
    after_ensemble = torch.rand(1)
    torch.manual_seed(5)
    ERM(factory(widths=[8, 16]), sgd)
    assert torch.equal(after_ensemble, torch.rand(1)), "members 1.. disturbed the run's stream"
    for a, b in zip(single.backbone.parameters(), joint.members[0].parameters(), strict=True):
        assert torch.equal(a, b)
    first = [p.detach().flatten()[0] for p in (m.body[0][0].weight for m in joint.members)]
    assert len({float(v) for v in first}) == 3
    torch.manual_seed(123)  # members 1.. do not depend on the global stream
    again = ensemble(num_members=3, seed=5)
    assert torch.equal(again.members[2].head.weight, joint.members[2].head.weight)
    assert member_seed(5, 1, "init") != member_seed(5, 2, "init") < 2**31


def test_members_mix_with_their_own_draws_unless_shared():
    from sweeplab.augment.mixup import Mixup

    own = ensemble(num_members=2, seed=0, mixer=Mixup(num_classes=10, alpha=1.0, seed=3))
    shared = ensemble(
        num_members=2, seed=0, mixer=Mixup(num_classes=10, alpha=1.0, seed=3), shared_batches=True
    )
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    lams = [own.mix(x, y, 0, mixer=m).lam for m in own.member_mixers]
    assert not torch.equal(lams[0], lams[1])
    assert own.member_mixers[0] is own.mixer
    shared_lams = [shared.mix(x, y, 0, mixer=m).lam for m in shared.member_mixers]
    assert torch.equal(shared_lams[0], shared_lams[1]) and torch.equal(shared_lams[0], lams[0])


def test_each_member_has_its_own_data_order():
    class Data:
        batch_size, drop_last, seed = 4, True, 0

    joint = ensemble(num_members=3, seed=0)
    orders = [joint._member_order(m, Data, 20) for m in (1, 2)]
    assert len(orders[0]) == 5 and not torch.equal(torch.cat(orders[0]), torch.cat(orders[1]))
    assert torch.equal(torch.cat(orders[0]), torch.cat(joint._member_order(1, Data, 20)))
    assert sorted(torch.cat(orders[0]).tolist()) == list(range(20))


def test_heterogeneous_members_loop_and_pad_their_features():
    joint = Ensemble(
        factory(widths=[8, 16]),
        sgd,
        members=[{"backbone": "mlp", "hidden": [12]}, {}],
        seed=0,
    )
    assert [type(m).__name__ for m in joint.members] == ["MLP", "SmallCNN"]
    assert joint.vectorized() is False and "architectures" in joint.unstackable_reason
    x = torch.randn(5, 1, 8, 8)
    logits, features = joint.predict_eval(x)
    assert logits.shape == (5, 2, 10) and features.shape == (5, 2, 16)
    assert torch.equal(features[:, 0, 12:], torch.zeros(5, 4))
    for m, head in enumerate(joint.member_heads()):
        torch.testing.assert_close(head(features[:, m]), logits[:, m])
    with pytest.raises(ValueError, match=r"regime\.vectorize=true is impossible"):
        Ensemble(factory(), sgd, members=[{"backbone": "mlp"}, {}], vectorize=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_members": 1}, r"regime.num_members must be an integer ≥ 2"),
        ({"num_members": 0}, r"regime.num_members must be an integer ≥ 2"),
        ({"members": [{}]}, r"regime.members must list at least 2"),
        ({"members": [{}, {}], "num_members": 3}, r"regime.num_members=3 but regime.members"),
        ({"members": [{"backbone": "nope"}, {}]}, r"regime.members\[0\].backbone: unknown"),
        ({"vectorize": "sometimes"}, r"regime.vectorize must be auto, true or false"),
    ],
)
def test_impossible_ensembles_fail_naming_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        ensemble(**options)


def test_a_vectorised_ensemble_refuses_manifold_mixup():
    from sweeplab.augment.manifold import ManifoldMixup

    mixer = ManifoldMixup(num_classes=10, alpha=2.0)
    with pytest.raises(ValueError, match="manifold_mixup"):
        ensemble(num_members=2, vectorize=True, mixer=mixer)
    assert ensemble(
        num_members=2, mixer=ManifoldMixup(num_classes=10, alpha=2.0)
    ).unstackable_reason


def test_a_joint_ensemble_trains_evaluates_and_reloads(tmp_path):
    outcome = _run(tmp_path, "regime=ensemble", "regime.num_members=2", "augment=mixup")
    assert outcome.status == "complete", outcome.error
    cache = torch.load(outcome.run_dir / "eval_cache" / "test.pt", weights_only=True)
    assert cache["member_logits"].shape[1] == 2
    model = load_model(outcome.run_dir)
    saved = torch.load(outcome.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert isinstance(model, Ensemble) and model.num_members == 2
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, saved["state_dict"][name], rtol=0, atol=0, msg=name)
    first, second = (model.members[m].head.weight for m in (0, 1))
    assert not torch.equal(first, second)  # two trained members, not one twice


# -- regime=ensemble_from_runs and lineage ----------------------------------------------


@pytest.fixture(scope="module")
def member_store(tmp_path_factory) -> Path:
    """Three finished single runs of one data split (data.seed=0), seeds 0, 1, 2."""
    store = tmp_path_factory.mktemp("members")
    for seed in (0, 1):
        assert _run(store, f"seed={seed}").status == "complete"
    assert _run(store, "seed=2", "data.seed=1").status == "complete"  # another split
    return store


SELECTOR = 'regime.runs="name=digits_small_cnn seed=0,1"'


def test_an_ensemble_of_runs_is_the_mean_of_its_members_and_records_them(member_store):
    members = [read_record(p.parent) for p in sorted(member_store.glob("runs/*/*/record.json"))]
    by_seed = {r["config"]["seed"]: r for r in members}
    outcome = _run(member_store, "regime=ensemble_from_runs", SELECTOR)
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    ids = sorted(by_seed[s]["run_id"] for s in (0, 1))
    assert record["sources"] == ids and record["config"]["regime"]["runs"] == ids
    assert record["metrics"]["train/steps"] == 0
    probs = [
        torch.load(
            member_store / "runs" / "digits_small_cnn" / i / "eval_cache" / "test.pt",
            weights_only=True,
        )["member_logits"].softmax(-1)[:, 0]
        for i in ids
    ]
    cache = torch.load(outcome.run_dir / "eval_cache" / "test.pt", weights_only=True)
    mean = cache["member_logits"].softmax(-1).mean(1)
    torch.testing.assert_close(mean, (probs[0] + probs[1]) / 2, rtol=0, atol=1e-6)
    # The run id hashes the member ids, not the selector text: the same two runs
    # named another way are the same run, which is skipped.
    again = _run(member_store, "regime=ensemble_from_runs", f"regime.runs=[{ids[1]},{ids[0]}]")
    assert again.status == "skipped" and again.run_dir == outcome.run_dir
    # The ensemble itself is no member of a later ensemble of the same selector.
    assert _run(member_store, "regime=ensemble_from_runs", SELECTOR).status == "skipped"
    model = load_model(outcome.run_dir)
    assert len(model.sources) == 2


def test_a_new_matching_run_makes_a_new_ensemble(member_store, tmp_path):
    cfg = compose_config([f"paths.root_dir={member_store}", "regime=ensemble_from_runs", SELECTOR])
    before = compute_run_id(cfg)
    wider = compose_config(
        [
            f"paths.root_dir={member_store}",
            "regime=ensemble_from_runs",
            'regime.runs="name=digits_small_cnn seed=0,1,2"',
        ]
    )
    assert compute_run_id(wider) != before
    pinned = pin_sources(wider)
    assert len(pinned) == 3 and OmegaConf.to_container(wider.regime.runs) == pinned


def test_members_of_another_split_or_a_single_run_are_refused(member_store):
    mixed = _run(
        member_store, "regime=ensemble_from_runs", 'regime.runs="name=digits_small_cnn seed=1,2"'
    )
    assert mixed.status == "failed"
    assert "different data or splits (data.seed: 0, 1)" in mixed.error
    one = _run(member_store, "regime=ensemble_from_runs", 'regime.runs="seed=0 data.seed=0"')
    assert one.status == "failed" and "matches one run" in one.error
    other = _run(member_store, "regime=ensemble_from_runs", SELECTOR, "data.val_fraction=0.3")
    assert other.status == "failed" and "data.val_fraction: 0.2, 0.3" in other.error


def test_a_selector_that_matches_nothing_is_one_line(member_store):
    outcome = _run(member_store, "regime=ensemble_from_runs", 'regime.runs="name=nothing"')
    assert outcome.status == "failed"
    assert "regime.runs: no complete run matches 'name=nothing'" in outcome.error


def test_seed_blocks_name_the_members_of_ensemble_seed():
    assert seed_block(5, 0) == "0,1,2,3,4" and seed_block(5, 2) == "10,11,12,13,14"
    with pytest.raises(ValueError):
        seed_block(0, 1)
    cfg = compose_config(["seed=1", '+probe="seed=${seed_block:3,${seed}}"'])
    assert cfg.probe == "seed=3,4,5"


def test_the_member_factory_reads_other_backbone_options():
    mlp = factory().for_option("mlp")
    assert type(mlp()).__name__ == "MLP"
    with pytest.raises(ValueError, match="unknown backbone option 'nope'"):
        factory().for_option("nope")
    assert partial(mlp, hidden=[4])().num_features == 4
