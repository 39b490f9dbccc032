"""OOD detectors: hand-computed and reference-implementation cases, separation, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from sweeplab.evaluation.cache import EvalOutputs
from sweeplab.evaluation.detectors import (
    DETECTORS,
    LinearHead,
    NotFittedError,
    OdinDetector,
    ash,
    build_detector,
    vim_principal_dim,
)
from sweeplab.evaluation.detectors import base as detector_base
from sweeplab.evaluation.detectors.base import percentile

ALL = sorted(DETECTORS)
# Detectors a single model has (mutual_info compares ensemble members).
SINGLE = [name for name in ALL if not DETECTORS[name].unsupported(1)]
NEEDS_FIT = [name for name in ALL if DETECTORS[name].needs_fit]
NEEDS_HEAD = [name for name in ALL if DETECTORS[name].needs_head]
LOGIT_ONLY = ["msp", "maxlogit", "energy", "entropy", "odin"]


def outputs_from_logits(logits: torch.Tensor, width: int = 4) -> EvalOutputs:
    """Outputs with the given logits ``[N, C]`` or members ``[N, M, C]``; features unused."""
    member_logits = logits if logits.ndim == 3 else logits[:, None]
    n, members, _ = member_logits.shape
    features = torch.zeros(n, members, width)
    return EvalOutputs(member_logits, features, torch.zeros(n, dtype=torch.long))


def outputs_from_features(features: torch.Tensor, head: LinearHead, labels=None) -> EvalOutputs:
    """Single-model outputs whose logits are ``head(features)``, as the backbone contract says."""
    if labels is None:
        labels = torch.zeros(features.shape[0], dtype=torch.long)
    return EvalOutputs(head.logits(features)[:, None], features, labels)


def synthetic_problem(seed: int = 0, classes: int = 4, block: int = 8, width: int = 64):
    """Post-ReLU-like class clusters in disjoint blocks of the first ``classes·block`` units
    (the rest nearly silent), a head aligned with the class blocks, and diffuse OOD points
    that excite every unit a little and no class block strongly."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(classes, width)
    for c in range(classes):
        means[c, c * block : (c + 1) * block] = 3.0
    head = LinearHead(2.0 * means / means.norm(dim=1, keepdim=True), torch.zeros(classes))

    def id_set(per_class: int) -> EvalOutputs:
        labels = torch.arange(classes).repeat_interleave(per_class)
        noise = torch.randn(labels.numel(), width, generator=g)
        scale = torch.full((width,), 0.1)
        scale[: classes * block] = 0.5
        features = torch.relu(means[labels] + noise * scale)
        return outputs_from_features(features, head, labels)

    train, test = id_set(100), id_set(50)
    ood_features = torch.relu(0.8 * torch.randn(200, width, generator=g))
    return train, test, outputs_from_features(ood_features, head), head


def fitted(name: str, train: EvalOutputs, head: LinearHead, **hp):
    detector = build_detector(name, **hp)
    return detector.fit(train, head if detector.needs_head else None)


# --- registry and errors -------------------------------------------------------------------


def test_registry_has_the_documented_detectors():
    assert set(DETECTORS) == {
        "msp", "maxlogit", "energy", "entropy", "odin", "mutual_info",
        "mahalanobis", "knn", "vim", "react", "ash",
    }  # fmt: skip
    assert set(NEEDS_FIT) == {"mahalanobis", "knn", "vim", "react", "ash"}
    assert set(NEEDS_HEAD) == {"react", "ash", "vim"}
    assert [name for name in ALL if DETECTORS[name].needs_model] == ["odin"]
    assert {name for name in ALL if DETECTORS[name].needs_features} == set(NEEDS_FIT)
    assert not any(DETECTORS[name].single_only for name in ALL)
    assert [name for name in ALL if DETECTORS[name].ensemble_only] == ["mutual_info"]
    for name, cls in DETECTORS.items():
        assert cls.name == name
        assert isinstance(build_detector(name), cls)


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown OOD detector 'mls'.*msp.*knn.*ash"):
        build_detector("mls")


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"knn: unknown hyperparameter 'kk'.*takes: k"):
        build_detector("knn", kk=5)
    with pytest.raises(ValueError, match=r"msp: unknown hyperparameter 'temperature'.*none"):
        build_detector("msp", temperature=2.0)


@pytest.mark.parametrize(
    ("name", "hp"),
    [
        ("knn", {"k": 0}),
        ("knn", {"k": 2.5}),
        ("energy", {"temperature": 0.0}),
        ("odin", {"temperature": float("nan")}),
        ("odin", {"epsilon": -0.1}),
        ("react", {"percentile": 101}),
        ("ash", {"percentile": 100}),
        ("ash", {"variant": "x"}),
        ("vim", {"dim": 0}),
    ],
)
def test_invalid_hyperparameter_values_raise(name, hp):
    with pytest.raises(ValueError, match=f"{name}.{next(iter(hp))}"):
        build_detector(name, **hp)


@pytest.mark.parametrize("name", ALL)
def test_default_grid_values_are_accepted(name):
    grid = DETECTORS[name].default_grid
    assert set(grid) <= set(DETECTORS[name].defaults)
    for key, values in grid.items():
        assert DETECTORS[name].defaults[key] in values
        for value in values:
            build_detector(name, **{key: value})


@pytest.mark.parametrize("name", NEEDS_FIT)
def test_score_before_fit_says_what_to_fit(name):
    train, _, _, _ = synthetic_problem()
    with pytest.raises(RuntimeError, match=rf"{name} needs fitted statistics.*call fit\(\)"):
        build_detector(name).score(train)
    assert issubclass(NotFittedError, RuntimeError)


def repeated_members(outputs: EvalOutputs, members: int) -> EvalOutputs:
    """An ensemble of ``members`` copies of a single model."""
    return EvalOutputs(
        outputs.member_logits.repeat(1, members, 1),
        outputs.features.repeat(1, members, 1),
        outputs.labels,
    )


@pytest.mark.parametrize("name", NEEDS_HEAD)
def test_head_detectors_need_one_head_per_member(name):
    train, test, _, head = synthetic_problem()
    with pytest.raises(ValueError, match=rf"{name} needs the classifier head"):
        build_detector(name).fit(train)
    ensemble = repeated_members(train, 3)
    with pytest.raises(ValueError, match=r"got 1 heads for M=3 members"):
        build_detector(name).fit(ensemble, head)
    detector = build_detector(name).fit(train, head)
    with pytest.raises(ValueError, match=r"fitted on M=1 members, got M=3"):
        detector.score(ensemble)
    wrong = LinearHead(torch.zeros(5, 64), torch.zeros(5))
    with pytest.raises(ValueError, match=r"C=5 classes.*C=4"):
        build_detector(name).fit(train, wrong)
    # three copies of one model, each with its head, score like the model itself
    tripled = build_detector(name).fit(ensemble, [head] * 3).score(repeated_members(test, 3))
    torch.testing.assert_close(tripled, detector.score(test), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NEEDS_FIT)
def test_feature_detectors_average_members_fitted_alone(name):
    train, test, _, head = synthetic_problem()
    other_train, other_test, _, other_head = synthetic_problem(seed=1)
    g = torch.Generator().manual_seed(2)
    rotation = torch.linalg.qr(torch.randn(64, 64, generator=g))[0]  # another feature space

    def second(outputs: EvalOutputs, rotate: bool) -> EvalOutputs:
        features = outputs.features[:, 0] @ rotation if rotate else outputs.features[:, 0]
        return outputs_from_features(features.abs(), other_head, outputs.labels)

    def pair(a: EvalOutputs, b: EvalOutputs) -> EvalOutputs:
        return EvalOutputs(
            torch.cat([a.member_logits, b.member_logits], dim=1),
            torch.cat([a.features, b.features], dim=1),
            a.labels,
        )

    first_fit, second_fit = train, second(other_train, True)
    heads = [head, other_head]
    detector = build_detector(name).fit(pair(first_fit, second_fit), heads)
    scores = detector.score(pair(test, second(other_test, True)))
    alone = [
        fitted(name, first_fit, head).score(test),
        fitted(name, second_fit, other_head).score(second(other_test, True)),
    ]
    torch.testing.assert_close(scores, (alone[0] + alone[1]) / 2, rtol=1e-12, atol=1e-12)
    assert len(detector.members) == 2


@pytest.mark.parametrize("name", NEEDS_FIT)
def test_feature_width_must_match_the_fit(name):
    train, _, _, head = synthetic_problem()
    detector = fitted(name, train, head)
    narrow = EvalOutputs(train.member_logits, train.features[..., :32], train.labels)
    with pytest.raises(ValueError, match=r"D=64|D=32"):
        detector.score(narrow)


# --- logit detectors ------------------------------------------------------------------------


def test_logit_detectors_on_a_hand_computed_example():
    outputs = outputs_from_logits(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    z = math.exp(2) + 2  # partition function of the first row
    p = [math.exp(2) / z, 1 / z, 1 / z]
    expected = {
        "msp": [-p[0], -1 / 3],
        "maxlogit": [-2.0, -1.0],
        "energy": [-math.log(z), -(1 + math.log(3))],
        "entropy": [-sum(q * math.log(q) for q in p), math.log(3)],
        # T = 2: row 1 becomes [1, 0, 0]
        "odin": [-math.e / (math.e + 2), -1 / 3],
    }
    for name, values in expected.items():
        hp = {"temperature": 2.0} if name == "odin" else {}
        scores = build_detector(name, **hp).score(outputs)
        assert scores.dtype == torch.float64
        assert scores.tolist() == pytest.approx(values, abs=1e-12), name
    energy_t2 = build_detector("energy", temperature=2.0).score(outputs)
    assert energy_t2[0].item() == pytest.approx(-2 * math.log(math.e + 2), abs=1e-12)


def test_ensembles_average_probabilities_for_msp_and_logits_for_energy():
    # one sample, two members that disagree: mean probability vs mean logits
    members = torch.tensor([[[4.0, 0.0], [0.0, 2.0]]])
    outputs = outputs_from_logits(members)
    p0 = (1 / (1 + math.exp(-4)) + 1 / (1 + math.exp(2))) / 2  # mean p(class 0)
    probs = [p0, 1 - p0]
    assert build_detector("msp").score(outputs).item() == pytest.approx(-max(probs), abs=1e-12)
    assert build_detector("entropy").score(outputs).item() == pytest.approx(
        -sum(q * math.log(q) for q in probs), abs=1e-12
    )
    # mean logits are [2, 1]
    assert build_detector("maxlogit").score(outputs).item() == pytest.approx(-2.0)
    assert build_detector("energy").score(outputs).item() == pytest.approx(
        -math.log(math.exp(2) + math.exp(1)), abs=1e-12
    )


@pytest.mark.parametrize("name", LOGIT_ONLY)
def test_logit_detectors_work_on_three_member_ensembles(name):
    g = torch.Generator().manual_seed(1)
    centre = torch.randn(60, 1, 5, generator=g) * 3
    members = centre + 0.3 * torch.randn(60, 3, 5, generator=g)
    scores = build_detector(name).score(outputs_from_logits(members))
    assert scores.shape == (60,)
    assert torch.isfinite(scores).all()
    # three identical members score exactly like the single model
    single = build_detector(name).score(outputs_from_logits(centre))
    tripled = build_detector(name).score(outputs_from_logits(centre.repeat(1, 3, 1)))
    torch.testing.assert_close(tripled, single, rtol=1e-12, atol=1e-12)


def test_msp_keeps_near_one_confidences_apart():
    outputs = outputs_from_logits(torch.tensor([[20.0, 0.0], [25.0, 0.0]]))
    scores = build_detector("msp").score(outputs)
    assert scores[0] > scores[1]  # float32 would round both to -1.0


# --- feature detectors ----------------------------------------------------------------------


def test_mahalanobis_matches_numpy_inverse():
    rng = np.random.default_rng(0)
    classes, width = 3, 5
    means = rng.normal(0, 3, (classes, width))
    labels = np.repeat(np.arange(classes), 80)
    mixing = rng.normal(size=(width, width)) * 0.5 + np.eye(width)
    train = means[labels] + rng.normal(size=(labels.size, width)) @ mixing
    test = rng.normal(0, 4, (30, width))

    class_means = np.stack([train[labels == c].mean(0) for c in range(classes)])
    residual = train - class_means[labels]
    precision = np.linalg.inv(residual.T @ residual / len(train))
    diffs = test[:, None, :] - class_means[None]
    expected = np.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(1)

    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    fit_outputs = EvalOutputs(torch.zeros(len(train), 1, classes), t(train), torch.tensor(labels))
    detector = build_detector("mahalanobis").fit(fit_outputs)
    scores = detector.score(EvalOutputs(torch.zeros(30, 1, classes), t(test), torch.zeros(30)))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_mahalanobis_ignores_directions_without_training_variance():
    train, test, _, _ = synthetic_problem()
    # a dead unit and redundant ones (combinations of others): singular covariance
    pairs = {-2: (4, 5), -3: (6, 7), -4: (8, 9), -5: (10, 11)}

    def degenerate(features: torch.Tensor) -> torch.Tensor:
        features = features[:, 0].clone()
        features[:, -1] = 0.0
        for unit, (a, b) in pairs.items():
            features[:, unit] = features[:, a] - 0.5 * features[:, b]
        return features

    fit_outputs = EvalOutputs(train.member_logits, degenerate(train.features), train.labels)
    detector = build_detector("mahalanobis").fit(fit_outputs)
    on_span = degenerate(test.features)[:, None]
    scores = detector.score(EvalOutputs(test.member_logits, on_span, test.labels))
    assert torch.isfinite(scores).all()
    # moving along directions the training set never spans changes nothing
    shift = torch.zeros(64)
    shift[-1] = 1.0
    for unit, (a, b) in pairs.items():
        shift[[unit, a, b]] += torch.tensor([1.0, -1.0, 0.5])
    moved = on_span + 3.0 * shift
    shifted = detector.score(EvalOutputs(test.member_logits, moved, test.labels))
    torch.testing.assert_close(shifted, scores, rtol=1e-3, atol=1e-3)


def test_mahalanobis_rejects_unlabelled_training_sets():
    train, _, _, _ = synthetic_problem()
    unlabelled = EvalOutputs(train.member_logits, train.features, torch.full_like(train.labels, -1))
    with pytest.raises(ValueError, match="class labels"):
        build_detector("mahalanobis").fit(unlabelled)


def brute_force_knn(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    distances = np.linalg.norm(test[:, None, :] - train[None], axis=2)
    return np.sort(distances, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 7, 500])
def test_knn_matches_brute_force_sorted_distances(k, monkeypatch):
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(120, 6)), rng.normal(size=(40, 6))
    monkeypatch.setattr(detector_base, "CHUNK_ELEMENTS", 120 * 7)  # several blocks of 7 rows
    detector = build_detector("knn", k=k).fit(
        EvalOutputs(
            torch.zeros(120, 1, 2), torch.tensor(train, dtype=torch.float32), torch.zeros(120)
        )
    )
    scores = detector.score(
        EvalOutputs(torch.zeros(40, 1, 2), torch.tensor(test, dtype=torch.float32), torch.zeros(40))
    )
    expected = brute_force_knn(train, test, min(k, 120))  # k is capped by the training set
    np.testing.assert_allclose(scores.numpy(), expected, atol=1e-5)


def test_knn_grid_scores_equal_one_detector_per_k():
    rng = np.random.default_rng(2)
    train = EvalOutputs(
        torch.zeros(80, 1, 2),
        torch.tensor(rng.normal(size=(80, 5)), dtype=torch.float32),
        torch.zeros(80),
    )
    test = EvalOutputs(
        torch.zeros(30, 1, 2),
        torch.tensor(rng.normal(size=(30, 5)), dtype=torch.float32),
        torch.zeros(30),
    )
    grid = [{"k": 1}, {"k": 9}, {"k": 200}, {}]
    together = build_detector("knn").fit(train).score_grid(test, grid)
    for setting, scores in zip(grid, together, strict=True):
        alone = build_detector("knn", **setting).fit(train).score(test)
        torch.testing.assert_close(scores, alone)


# --- head-based detectors -------------------------------------------------------------------


def numpy_vim(train_f, test_f, w, b, dim):
    """ViM as in the paper's code (numpy), returning the ID score logsumexp − α·residual."""
    u = -np.linalg.pinv(w) @ b
    centred = train_f - u
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(train_f))
    ns = eigenvectors[:, np.argsort(-eigenvalues)[dim:]]
    alpha = (train_f @ w.T + b).max(1).mean() / np.linalg.norm(centred @ ns, axis=1).mean()
    logits = test_f @ w.T + b
    top = logits.max(1, keepdims=True)
    energy = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
    return energy - alpha * np.linalg.norm((test_f - u) @ ns, axis=1)


def test_vim_matches_a_numpy_reimplementation():
    rng = np.random.default_rng(2)
    width, classes, dim = 8, 3, 4
    scales = np.array([3.0, 2.5, 2.0, 1.5, 0.4, 0.3, 0.2, 0.1])  # distinct eigenvalues
    train = rng.normal(size=(300, width)) * scales + 1.0
    test = rng.normal(size=(25, width)) * 1.5
    w, b = rng.normal(size=(classes, width)), rng.normal(size=classes)
    head = LinearHead(torch.tensor(w, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    w32, b32 = head.weight.double().numpy(), head.bias.double().numpy()
    train32 = torch.tensor(train, dtype=torch.float32)
    test32 = torch.tensor(test, dtype=torch.float32)

    detector = build_detector("vim", dim=dim).fit(outputs_from_features(train32, head), head)
    scores = detector.score(outputs_from_features(test32, head))
    expected = -numpy_vim(train32.double().numpy(), test32.double().numpy(), w32, b32, dim)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_vim_principal_dim_follows_the_paper_rule():
    assert vim_principal_dim(2048) == 1000
    assert vim_principal_dim(768) == 512
    assert vim_principal_dim(512) == 256
    assert vim_principal_dim(128) == 64
    train, _, _, head = synthetic_problem()
    with pytest.raises(ValueError, match="smaller than the feature width"):
        build_detector("vim", dim=64).fit(train, head)


def test_react_threshold_is_the_numpy_percentile_and_100_is_energy():
    train, test, _, head = synthetic_problem()
    react = build_detector("react", percentile=90).fit(train, head)
    assert react.members[0].threshold == pytest.approx(
        np.percentile(train.features.numpy(), 90), rel=1e-6
    )
    everything = build_detector("react", percentile=100).fit(train, head)
    torch.testing.assert_close(
        everything.score(train), build_detector("energy").score(train), rtol=1e-5, atol=1e-5
    )
    # clipping lowers large logits, so some in-distribution scores move up
    assert (react.score(test) > build_detector("energy").score(test) + 1e-3).any()


@pytest.mark.parametrize("q", [0, 12.5, 50, 90, 99.9, 100])
def test_percentile_matches_numpy(q):
    values = torch.randn(37, 11, generator=torch.Generator().manual_seed(3))
    assert percentile(values, q) == pytest.approx(np.percentile(values.numpy(), q), abs=1e-6)


def test_ash_shapes_a_row_as_in_the_paper():
    row = torch.tensor([[1.0, 4.0, 2.0, 3.0]], dtype=torch.float64)
    assert ash(row, 50, "p").tolist() == [[0.0, 4.0, 0.0, 3.0]]
    assert ash(row, 50, "b").tolist() == [[0.0, 5.0, 0.0, 5.0]]  # row sum 10 over 2 kept
    scale = math.exp(10 / 7)
    assert ash(row, 50, "s")[0].tolist() == pytest.approx([0.0, 4 * scale, 0.0, 3 * scale])
    assert ash(row, 99, "p").tolist() == [[0.0, 4.0, 0.0, 0.0]]  # at least one unit is kept


def test_ash_with_nothing_pruned_is_energy():
    train, test, _, head = synthetic_problem()
    energy = build_detector("energy").score(test)
    prune_only = build_detector("ash", percentile=0, variant="p").fit(train, head)
    torch.testing.assert_close(prune_only.score(test), energy, rtol=1e-5, atol=1e-5)
    # ASH-S at p = 0 still scales by exp(s₁/s₂) = e: energy of head(e·x)
    scaled = outputs_from_features(math.e * test.features[:, 0], head)
    ash_s = build_detector("ash", percentile=0).fit(train, head)
    torch.testing.assert_close(
        ash_s.score(test), build_detector("energy").score(scaled), rtol=1e-5, atol=1e-5
    )


def test_ash_warns_on_negative_features():
    train, _, _, head = synthetic_problem()
    signed = EvalOutputs(train.member_logits, train.features - 1.0, train.labels)
    with pytest.warns(UserWarning, match="non-negative"):
        build_detector("ash").fit(signed, head)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_detector("ash").fit(train, head)


# --- every detector -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SINGLE)
def test_every_detector_scores_clear_ood_higher(name):
    train, test, ood, head = synthetic_problem()
    detector = fitted(name, train, head)
    id_scores, ood_scores = detector.score(test), detector.score(ood)
    assert id_scores.shape == (test.labels.shape[0],)
    assert ood_scores.shape == (ood.labels.shape[0],)
    assert torch.isfinite(id_scores).all() and torch.isfinite(ood_scores).all()
    is_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    auroc = roc_auc_score(is_ood, np.r_[id_scores.numpy(), ood_scores.numpy()])
    assert auroc > 0.9, f"{name}: AUROC {auroc:.3f}"


@pytest.mark.parametrize("name", SINGLE)
def test_fit_returns_the_detector_and_logit_detectors_ignore_it(name):
    train, _, _, head = synthetic_problem()
    detector = build_detector(name)
    assert detector.fit(train, head) is detector
    assert detector.is_fitted


# --- ODIN with the model --------------------------------------------------------------------


def tiny_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(6, 4)
    with torch.no_grad():
        model.weight.mul_(3)
    return model.eval()


def batches_of(x: torch.Tensor, size: int = 7):
    return [(x[i : i + size], torch.zeros(len(x[i : i + size]))) for i in range(0, len(x), size)]


def test_odin_without_perturbation_equals_scoring_the_cached_logits():
    model = tiny_model()
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(4))
    odin = build_detector("odin", temperature=10.0, epsilon=0.0)
    preprocess = lambda t: t * 2 - 1  # noqa: E731
    from_inputs = odin.score_inputs(model, batches_of(x), preprocess)
    with torch.no_grad():
        cached = outputs_from_logits(model(preprocess(x)))
    # equal up to float32 matmul rounding across batch sizes
    torch.testing.assert_close(from_inputs, odin.score(cached), rtol=1e-6, atol=1e-7)


def test_odin_perturbation_matches_the_closed_form_and_raises_confidence():
    model = tiny_model(1)
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(5))
    temperature, epsilon = 1000.0, 0.05
    odin = OdinDetector(temperature=temperature, epsilon=epsilon)
    scores = odin.score_inputs(model, batches_of(x), lambda t: t)

    # linear model: ∇ₓ log softmax(Wx/T)_ŷ = (W_ŷ − Σ_c p_c W_c) / T
    w, b = model.weight.detach().double(), model.bias.detach().double()
    xd = x.double()
    probs = torch.softmax((xd @ w.T + b) / temperature, dim=1)
    predicted = probs.argmax(dim=1)
    gradient = (w[predicted] - probs @ w) / temperature
    perturbed = xd + epsilon * gradient.sign()
    expected = -torch.softmax((perturbed @ w.T + b) / temperature, dim=1).max(dim=1).values
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)

    unperturbed = OdinDetector(temperature=temperature, epsilon=0.0)
    baseline = unperturbed.score_inputs(model, batches_of(x), lambda t: t)
    assert (scores < baseline).all()  # higher max softmax after the step: lower OOD score


def test_odin_score_inputs_accepts_member_logits():
    models = [tiny_model(s) for s in range(3)]
    ensemble = lambda t: torch.stack([m(t) for m in models], dim=1)  # noqa: E731
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(6))
    odin = OdinDetector(temperature=100.0, epsilon=0.0)
    from_inputs = odin.score_inputs(ensemble, batches_of(x), lambda t: t)
    with torch.no_grad():
        cached = outputs_from_logits(ensemble(x))
    torch.testing.assert_close(from_inputs, odin.score(cached), rtol=1e-6, atol=1e-7)
    perturbed = OdinDetector(temperature=100.0, epsilon=0.01)
    assert (perturbed.score_inputs(ensemble, batches_of(x), lambda t: t) < from_inputs).all()


# --- LinearHead -----------------------------------------------------------------------------


def test_linear_head_from_nn_linear_is_exact():
    linear = nn.Linear(5, 3)
    head = LinearHead.from_module(linear)
    assert torch.equal(head.weight, linear.weight.detach()) and not head.weight.requires_grad
    x = torch.randn(4, 5)
    torch.testing.assert_close(head.logits(x), linear(x), rtol=0, atol=0)
    no_bias = LinearHead.from_module(nn.Linear(5, 3, bias=False))
    assert torch.equal(no_bias.bias, torch.zeros(3))


def test_linear_head_from_an_affine_container():
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(5)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2.0)
    module = nn.Sequential(norm, nn.Dropout(0.5), nn.Linear(5, 3)).train()
    head = LinearHead.from_module(module)
    assert module.training  # probed on a copy
    x = torch.randn(6, 5)
    torch.testing.assert_close(head.logits(x), module.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)), "not an affine map"),
        (nn.Identity(), "cannot tell the input width"),
        (nn.LazyLinear(3), "uninitialised"),
    ],
)
def test_linear_head_rejects_what_is_not_a_linear_classifier(module, match):
    with pytest.raises(ValueError, match=match):
        LinearHead.from_module(module)


def test_linear_head_checks_shapes():
    with pytest.raises(ValueError, match=r"\[C, D\]"):
        LinearHead(torch.zeros(3, 4), torch.zeros(4))
