"""Evaluation of models with M members: the forward passes, the cache and the detectors.

A small two-member model goes through the real passes and ``evaluate_cached``;
every detector score is recomputed here from the members one by one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from sweeplab.evaluation.cache import EvalOutputs, cache_file, load_outputs, load_tensors
from sweeplab.evaluation.detectors import DETECTORS, Detector, LinearHead, build_detector
from sweeplab.evaluation.detectors.logits import score_odin_grid
from sweeplab.evaluation.ood import OODSetOutputs, evaluate_ood
from sweeplab.evaluation.passes import HEAD_CACHE, EvalPasses, ood_cache_name
from sweeplab.evaluation.report import evaluate_cached, is_eval_metric
from sweeplab.metrics.ood import auroc
from tests.conftest import compose_config

FEATURE_DETECTORS = [name for name, cls in DETECTORS.items() if cls.needs_features]
TEMPERATURE, EPSILON = 2.0, 0.02


class Members(nn.Module):
    """``members`` small networks, each with a feature map and a head of its own.

    Member 1's head is a BatchNorm before a linear layer, so its linear map must be
    read by probing. ``flat_features`` returns ``[B, D]`` features for M = 1, as a
    single model does.
    """

    def __init__(self, members: int, in_dim: int, width: int, classes: int, flat_features=False):
        super().__init__()
        torch.manual_seed(0)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.ReLU()) for _ in range(members)
        )
        heads = [nn.Linear(width, classes)]
        if members > 1:
            norm = nn.BatchNorm1d(width)
            norm.running_mean.uniform_(0.0, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            heads += [nn.Sequential(norm, nn.Linear(width, classes))]
        self.heads = nn.ModuleList(heads[:members])
        self.flat_features = flat_features

    def predict_eval(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = [encoder(x) for encoder in self.encoders]
        logits = [head(f) for head, f in zip(self.heads, features, strict=True)]
        if self.flat_features:
            return torch.stack(logits, dim=1), features[0]
        return torch.stack(logits, dim=1), torch.stack(features, dim=1)

    def member_heads(self) -> list[nn.Module]:
        return list(self.heads)


def eval_setup(store: Path, *overrides: str) -> tuple[DictConfig, object]:
    cfg = compose_config(
        [
            f"paths.root_dir={store}",
            "data=synthetic",
            "eval.shift.corruptions=[]",
            "eval.plots=false",
            "eval.calibration.calibrators=[ts]",
            "eval.ood.sets.noise.count=60",
            "eval.ood.sets.blobs.count=60",
            f"eval.ood.hyperparameters.odin={{temperature: {TEMPERATURE}, epsilon: {EPSILON}}}",
            *overrides,
        ]
    )
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cfg, datamodule


def evaluated(store: Path, module: nn.Module, *overrides: str):
    cfg, datamodule = eval_setup(store, *overrides)
    run_dir = store / "run"
    EvalPasses(cfg.eval, run_dir).run(module.eval(), datamodule)
    return cfg, datamodule, run_dir, evaluate_cached(run_dir, cfg.eval)


def model(members: int, datamodule, **kwargs) -> Members:
    channels, height, width = datamodule.image_shape
    return Members(members, channels * height * width, 12, datamodule.num_classes, **kwargs)


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    store = tmp_path_factory.mktemp("members")
    _, datamodule = eval_setup(store)
    module = model(2, datamodule)
    return (module, *evaluated(store, module))


def member_part(outputs: EvalOutputs, m: int) -> EvalOutputs:
    return EvalOutputs(outputs.member_logits[:, m : m + 1], outputs.features[:, m], outputs.labels)


def test_the_cache_keeps_each_members_features(two_members):
    module, _, datamodule, run_dir, _ = two_members
    test = load_outputs(run_dir, "test")
    assert test.features.shape == (len(test.labels), 2, 12)
    images, _ = datamodule.split("test")
    with torch.no_grad():
        logits, features = module.predict_eval(datamodule.preprocess(images, train=False))
    torch.testing.assert_close(test.member_logits, logits)
    torch.testing.assert_close(test.features, features)
    heads = load_tensors(run_dir, HEAD_CACHE)["heads"]
    assert len(heads) == 2
    x = torch.randn(5, 12)
    with torch.no_grad():
        for saved, head in zip(heads, module.heads, strict=True):
            linear = LinearHead(saved["weight"], saved["bias"])
            torch.testing.assert_close(linear.logits(x), head(x), rtol=1e-5, atol=1e-5)


def test_feature_detectors_average_the_members_scores(two_members):
    module, cfg, _, run_dir, report = two_members
    assert report.details["ood"]["members"] == 2
    assert report.details["ood"]["skipped"] == {}
    fit, test = load_outputs(run_dir, "train"), load_outputs(run_dir, "test")
    sets = {
        name: load_outputs(run_dir, ood_cache_name(name, "test")) for name in ("noise", "blobs")
    }
    heads = [LinearHead.from_module(head) for head in module.heads]
    chosen = report.details["ood"]["hyperparameters"]
    # the scores behind the metrics: the same evaluation on the loaded cache
    result = evaluate_ood(
        cfg.eval,
        fit,
        load_outputs(run_dir, "val"),
        test,
        [
            OODSetOutputs(n, "far", part, load_outputs(run_dir, ood_cache_name(n, "val")))
            for n, part in sets.items()
        ],
        heads=heads,
        model_scores={"odin": load_tensors(run_dir, "odin")},
    )
    assert result.hyperparameters == chosen
    for name in FEATURE_DETECTORS:
        by_hand = {key: torch.zeros(len(part.labels), dtype=torch.float64) for key, part in
                   {"id": test, **sets}.items()}  # fmt: skip
        for m in range(2):
            detector = build_detector(name, **chosen[name])
            detector.fit(member_part(fit, m), heads[m] if detector.needs_head else None)
            for key, part in {"id": test, **sets}.items():
                by_hand[key] += detector.score(member_part(part, m)) / 2
        for set_name in sets:
            expected = auroc(by_hand["id"], by_hand[set_name])
            assert report.metrics[f"ood/{set_name}/{name}/auroc"] == pytest.approx(
                expected, abs=1e-12
            ), name
        for key, scores in by_hand.items():
            torch.testing.assert_close(result.scores[key][name], scores, rtol=1e-12, atol=1e-12)


def mean_probability_odin(module: Members, inputs: torch.Tensor) -> torch.Tensor:
    """ODIN on S(x) = mean_m softmax(z_m(x)/T), written out with autograd."""
    x = inputs.clone().requires_grad_(True)
    probs = torch.softmax(module.predict_eval(x)[0].double() / TEMPERATURE, dim=-1).mean(dim=1)
    (gradient,) = torch.autograd.grad(probs.max(dim=1).values.log().sum(), x)
    perturbed = inputs - EPSILON * torch.sign(-gradient)
    with torch.no_grad():
        logits = module.predict_eval(perturbed)[0].double()
    return -torch.softmax(logits / TEMPERATURE, dim=-1).mean(dim=1).max(dim=1).values


def test_odin_uses_the_mean_member_probability(two_members):
    module, _, datamodule, run_dir, report = two_members
    cached = load_tensors(run_dir, "odin")
    assert cached["hyperparameters"] == {"temperature": TEMPERATURE, "epsilon": EPSILON}
    images, _ = datamodule.split("test")
    inputs = datamodule.preprocess(images, train=False)
    expected = mean_probability_odin(module, inputs)
    torch.testing.assert_close(cached["scores"]["test"], expected, rtol=1e-6, atol=1e-8)
    # the mean logit is another function: it would give other scores
    mean_logit = score_odin_grid(
        lambda x: module.predict_eval(x)[0].mean(dim=1),
        [(images, None)],
        lambda x: datamodule.preprocess(x, train=False),
        [cached["hyperparameters"]],
    )[0]
    assert (mean_logit - expected).abs().max() > 1e-3
    assert 0 <= report.metrics["ood/far/odin/auroc"] <= 1


def test_odin_of_a_single_model_is_the_mean_logit_formula(tmp_path):
    _, datamodule = eval_setup(tmp_path)
    module = model(1, datamodule, flat_features=True).eval()
    _, _, run_dir, report = evaluated(tmp_path, module)
    assert load_outputs(run_dir, "test").features.shape[1:] == (1, 12)
    images, _ = datamodule.split("test")
    old = score_odin_grid(
        lambda x: module.predict_eval(x)[0].mean(dim=1),
        datamodule.loader("test"),
        lambda x: datamodule.preprocess(x, train=False),
        [{"temperature": TEMPERATURE, "epsilon": EPSILON}],
    )[0]
    torch.testing.assert_close(load_tensors(run_dir, "odin")["scores"]["test"], old, rtol=0, atol=0)
    inputs = datamodule.preprocess(images, train=False)
    torch.testing.assert_close(old, mean_probability_odin(module, inputs), rtol=1e-6, atol=1e-8)
    assert report.details["ood"]["members"] == 1


def write_old_format(run_dir: Path) -> None:
    """Rewrite the cache as single models had it: features ``[N, D]``, one weight/bias head."""
    for path in (run_dir / "eval_cache").rglob("*.pt"):
        data = torch.load(path, weights_only=True)
        if "features" in data:
            assert data["features"].shape[1] == 1
            data["features"] = data["features"][:, 0].clone()
        if "heads" in data:
            (data,) = data["heads"]
        torch.save(data, path)


def test_an_old_format_cache_gives_the_same_metrics(tmp_path):
    _, datamodule = eval_setup(tmp_path)
    module = model(1, datamodule)
    cfg, _, run_dir, report = evaluated(tmp_path, module)
    write_old_format(run_dir)
    old_test = torch.load(cache_file(run_dir, "test"), weights_only=True)
    assert old_test["features"].ndim == 2 and "heads" not in load_tensors(run_dir, HEAD_CACHE)
    assert load_outputs(run_dir, "test").features.shape[1] == 1
    again = evaluate_cached(run_dir, cfg.eval)
    assert again.metrics.keys() == report.metrics.keys()
    for key, value in report.metrics.items():
        assert again.metrics[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    single = {name for name, cls in DETECTORS.items() if not cls.unsupported(1)}
    assert {k.split("/")[2] for k in again.metrics if k.startswith("ood/")} == single


class EnsembleOnly(Detector):
    name = "disagreement"
    ensemble_only = True

    def _score(self, outputs: EvalOutputs) -> torch.Tensor:
        return outputs.member_logits.double().std(dim=1).sum(dim=1)


class SingleOnly(EnsembleOnly):
    name = "single"
    ensemble_only = False
    single_only = True


def test_detectors_not_defined_for_the_members_are_skipped(two_members, monkeypatch):
    _, cfg, _, run_dir, _ = two_members
    monkeypatch.setitem(DETECTORS, "disagreement", EnsembleOnly)
    monkeypatch.setitem(DETECTORS, "single", SingleOnly)
    cfg = copy.deepcopy(cfg)
    cfg.eval.ood.detectors = ["msp", "single", "disagreement"]
    report = evaluate_cached(run_dir, cfg.eval)
    skipped = report.details["ood"]["skipped"]
    assert list(skipped) == ["single"] and "single models only" in skipped["single"]
    assert "ood/far/disagreement/auroc" in report.metrics
    assert not any("/single/" in key for key in report.metrics)
    with pytest.raises(ValueError, match="ensembles only"):
        EnsembleOnly().score(member_part(load_outputs(run_dir, "test"), 0))


def test_head_detectors_are_skipped_when_the_head_is_not_linear(tmp_path):
    _, datamodule = eval_setup(tmp_path)
    module = model(1, datamodule)
    module.heads[0] = nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 4))
    _, _, run_dir, report = evaluated(tmp_path, module, "eval.ood.detectors=[knn,vim,ash]")
    assert load_tensors(run_dir, HEAD_CACHE)["heads"] == []
    skipped = report.details["ood"]["skipped"]
    assert set(skipped) == {"vim", "ash"} and "not an affine map" in skipped["vim"]
    assert "ood/far/knn/auroc" in report.metrics
    assert not any(k.startswith(("ood/far/vim", "ood/noise/ash")) for k in report.metrics)


def test_the_passes_read_heads_without_member_heads():
    from sweeplab.evaluation.passes import head_cache, member_heads

    class Single(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.head = nn.Linear(3, 2)

    single = Single()
    assert member_heads(single) == [single.backbone.head]
    (saved,) = head_cache(single)["heads"]
    assert torch.equal(saved["weight"], single.backbone.head.weight.detach())
    assert head_cache(nn.Linear(3, 2)) == {
        "heads": [],
        "unavailable": "the model exposes no classifier head",
    }


def test_ensemble_and_diversity_metrics_are_evaluation_metrics():
    for key in ("ens/test/acc", "nas/diversity", "ood/far/msp/auroc", "test/cls/acc"):
        assert is_eval_metric(key), key
    for key in ("train/epochs", "lr-AdamW", "ensemble/x"):
        assert not is_eval_metric(key), key
