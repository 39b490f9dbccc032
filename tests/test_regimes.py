"""The Regime base: a regime written only against it trains, evaluates and records.

The two toy regimes here live in the tests, not in the package, and are chosen by
``regime._target_``: nothing in the app knows them, which is the point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sweeplab.assembly import BackboneFactory, ModelInput, build_regime
from sweeplab.regimes.base import Regime, build_backbone, mean_probability_log
from sweeplab.regimes.erm import ERM
from sweeplab.regimes.loading import load_model
from sweeplab.regimes.registry import list_regimes, regime_class, register_regime
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
]


class PairOfMembers(Regime):
    """Two seeded backbones trained side by side; predictions are their mean probability."""

    def __init__(
        self, backbone, optimizer, scheduler=None, label_smoothing=0.0, name="", mixer=None
    ):
        super().__init__(optimizer, scheduler, label_smoothing, name=name)
        self.members = nn.ModuleList(build_backbone(backbone, seed=s) for s in (10, 11))
        self.attach_mixer(mixer, self.members[0])

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        mixed = self.mix(x, y, batch_idx)
        return sum(self.mixer.loss(mixed.forward(m), mixed) for m in self.members) / 2

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = [m.features(x) for m in self.members]
        logits = [m.head(f) for m, f in zip(self.members, features, strict=True)]
        return torch.stack(logits, dim=1), torch.stack(features, dim=1)

    def member_heads(self) -> list[nn.Module]:
        return [m.head for m in self.members]


class Untrained(Regime):
    """A regime that is complete when built: one freshly initialised backbone."""

    trains = False

    def __init__(
        self, backbone, optimizer=None, scheduler=None, label_smoothing=0.0, name="", mixer=None
    ):
        super().__init__(None, None, label_smoothing, name=name)
        self.backbone = build_backbone(backbone)
        self.attach_mixer(mixer, self.backbone)

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone.features(x)
        return self.backbone.head(features).unsqueeze(1), features.unsqueeze(1)


def _run(store: Path, *overrides: str):
    cfg = compose_config(
        [f"paths.root_dir={store}", "trainer.enable_progress_bar=false", *overrides]
    )
    run_dir = store / "runs" / cfg.name / compute_run_id(cfg)
    return execute(cfg, run_dir, list(overrides))


def test_a_toy_regime_on_the_base_trains_evaluates_and_records(tmp_path):
    outcome = _run(tmp_path, *TINY, f"regime._target_={__name__}.PairOfMembers")
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    metrics = record["metrics"]
    assert 0.0 <= metrics["test/cls/acc"] <= 1.0 and metrics["test/cls/nll"] > 0
    assert "ood/near/knn/auroc" in metrics and "shift/mean/acc" in metrics
    assert metrics["train/steps"] > 0
    cache = torch.load(outcome.run_dir / "eval_cache" / "test.pt", weights_only=True)
    assert cache["member_logits"].shape[1] == 2
    # The finished run is a model again, rebuilt from its record alone.
    model = load_model(outcome.run_dir)
    assert isinstance(model, PairOfMembers) and not model.training
    images = torch.zeros(3, 1, 8, 8)
    assert model.predict_eval(images)[0].shape == (3, 2, 8)


def test_a_regime_that_does_not_train_is_evaluated_as_built(tmp_path):
    outcome = _run(tmp_path, *TINY, f"regime._target_={__name__}.Untrained")
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["metrics"]["train/steps"] == 0
    assert (outcome.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test/cls/acc" in record["metrics"]


def test_a_target_that_is_not_a_regime_fails_naming_it(tmp_path):
    outcome = _run(tmp_path, *TINY, "regime._target_=torch.nn.Identity")
    assert outcome.status == "failed"
    assert (
        "regime._target_=torch.nn.Identity" in outcome.error
        and "not a sweeplab Regime" in outcome.error
    )


def test_a_backbone_that_cannot_be_built_names_the_backbone_node(tmp_path):
    # The backbone is built inside the regime; the error still names the backbone node.
    # (A bad value of a known key stops earlier, at the config check: tests/test_schema.py.)
    outcome = _run(tmp_path, "+backbone.no_such_option=1")
    assert outcome.status == "failed"
    assert "no_such_option" in outcome.error and "while creating `backbone`" in outcome.error


def test_registry_lists_every_regime_and_its_config():
    names = list_regimes()
    assert "erm" in names and regime_class("erm") is ERM
    configs = {p.stem for p in (Path(__file__).parents[1] / "conf" / "regime").glob("*.yaml")}
    assert set(names) == configs
    with pytest.raises(KeyError, match=r"known regimes: .*erm"):
        regime_class("no_such_regime")


def test_registering_two_classes_under_one_name_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_regime("erm")(PairOfMembers)


def test_the_factory_builds_fresh_seeded_members():
    cfg = compose_config([])
    factory = BackboneFactory(cfg.backbone, ModelInput(1, 8, 8, 8))
    first, second = factory(), factory()
    assert first.num_classes == 8 and first.in_chans == 1
    assert not torch.equal(first.head.weight, second.head.weight)
    state = torch.random.get_rng_state()
    a, b = build_backbone(factory, seed=3), build_backbone(factory, seed=3)
    assert torch.equal(a.head.weight, b.head.weight)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded members leave the stream be
    assert factory(widths=[4]).num_features == 4


def test_erm_built_by_assembly_matches_its_backbone():
    regime = build_regime(compose_config([]), ModelInput(1, 8, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    regime.eval()
    logits, features = regime.predict_eval(x)
    assert logits.shape == (5, 1, 8) and features.shape[:2] == (5, 1)
    torch.testing.assert_close(logits[:, 0], regime(x))
    assert regime.member_heads() == [regime.backbone.head]
    assert regime.model_input == ModelInput(1, 8, 8, 8)


def test_mean_probability_log_is_the_log_of_mean_member_probabilities():
    logits = torch.randn(4, 3, 5)
    expected = logits.softmax(-1).mean(1).log()
    torch.testing.assert_close(mean_probability_log(logits), expected)
    torch.testing.assert_close(
        mean_probability_log(logits[:, :1]), torch.log_softmax(logits[:, 0], -1)
    )
