"""Knowledge distillation (``regime=distill``): the loss terms, the frozen teacher kept out
of the student's state, ensemble teachers, lineage, and the teacher cache."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pytorch_lightning.loggers.logger import Logger

from sweeplab.assembly import BackboneFactory, ModelInput
from sweeplab.augment.batch import MixedBatch
from sweeplab.augment.mixup import Mixup
from sweeplab.configs import config_dir
from sweeplab.regimes.distill import TEACHER_METRICS, Distill
from sweeplab.regimes.distill_losses import (
    dist_loss,
    kd_loss,
    mix_targets,
    teacher_probabilities,
)
from sweeplab.regimes.erm import ERM
from sweeplab.regimes.loading import load_model
from sweeplab.tracking.record import read_record
from tests.conftest import compose_config, run_in_store

DIGITS = ModelInput(channels=1, height=8, width=8, num_classes=8)  # 8, 9 held out
TINY = [
    "trainer.max_epochs=1",
    "data.val_fraction=0.2",
    "data.seed=0",
    "data.train_subset=512",
    "eval.shift.corruptions=[]",
    "eval.ood.detectors=[msp]",
    "eval.calibration.calibrators=[ts]",
    "eval.plots=false",
]
STUDENT = ["backbone=mlp", "backbone.hidden=[16]"]
TEACHERS = 'regime.teacher="name=digits_small_cnn regime=erm seed=0,1"'


def factory(option: str = "mlp", model_input: ModelInput = DIGITS, **overrides) -> BackboneFactory:
    cfg = OmegaConf.merge(OmegaConf.load(config_dir() / "backbone" / f"{option}.yaml"), overrides)
    return BackboneFactory(cfg, model_input)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def _run(store: Path, *overrides: str):
    return run_in_store(store, [*TINY, *overrides])


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory) -> Path:
    """Two finished small-CNN runs (seeds 0, 1) of one split: the teachers."""
    store = tmp_path_factory.mktemp("teachers")
    for seed in (0, 1):
        outcome = _run(store, f"seed={seed}", "backbone.widths=[8,16]")
        assert outcome.status == "complete", outcome.error
    return store


def teacher_ids(store: Path) -> list[str]:
    return sorted(p.parent.name for p in store.glob("runs/digits_small_cnn/*/record.json"))


def distill(store: Path, teacher=None, **options) -> Distill:
    options.setdefault("optimizer", sgd)
    return Distill(
        factory(hidden=[16]),
        teacher=teacher or teacher_ids(store)[0],
        runs_dir=store / "runs",
        **options,
    )


# -- the terms, on fixed logits -----------------------------------------------------


def test_the_kd_term_is_the_hand_computed_kl_at_temperature():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    T = 2.0
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        ps = [math.exp(v / T) for v in s_row]
        pt = [math.exp(v / T) for v in t_row]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        total += sum(t * math.log(t / s) for s, t in zip(ps, pt, strict=True))
    expected = total / 2 * T**2
    probs = teacher_probabilities(teacher[:, None], T)
    assert kd_loss(student, probs, T).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(teacher, probs, T).item() == pytest.approx(0.0, abs=1e-7)


def test_the_kd_gradient_keeps_its_size_across_temperatures():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(64, 10, generator=generator) * 2
    start = torch.randn(64, 10, generator=generator) * 2
    norms = []
    for T in (1.0, 4.0, 10.0):
        student = start.clone().requires_grad_(True)
        kd_loss(student, teacher_probabilities(teacher[:, None], T), T).backward()
        norms.append(student.grad.norm().item())
    assert max(norms) / min(norms) < 3, norms
    # without T² the gradient at T = 10 would be about a hundredth of that at T = 1
    assert norms[2] > norms[0] / 10


def test_dist_is_zero_for_matching_relations_and_mixed_targets_mix_like_labels():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    probs = teacher_probabilities(logits[:, None], 4.0)
    assert dist_loss(logits, probs, 4.0).item() == pytest.approx(0.0, abs=1e-5)
    assert dist_loss(-logits, probs, 4.0).item() > 1.0
    lam = torch.full((6,), 0.3)
    partner = torch.tensor([1, 0, 3, 2, 5, 4])
    batch = MixedBatch(x=logits, target=probs, labels=torch.arange(6), lam=lam, partner=partner)
    torch.testing.assert_close(mix_targets(probs, batch), 0.3 * probs + 0.7 * probs[partner])
    assert mix_targets(probs, MixedBatch(x=logits, target=probs, labels=torch.arange(6))) is probs


# -- the regime, built from the store ------------------------------------------------


def test_with_kd_weight_zero_the_student_trains_as_erm(teacher_store):
    def trained(build):
        torch.manual_seed(3)  # as the runner seeds a run; dropout draws from this stream
        module = build(factory(hidden=[16], dropout=0.2))
        optimizer = sgd(module.trainable_parameters())
        generator = torch.Generator().manual_seed(0)
        for step in range(5):
            x = torch.randn(16, 1, 8, 8, generator=generator)
            y = torch.randint(0, 8, (16,), generator=generator)
            optimizer.zero_grad()
            module.training_loss(x, y, step).backward()
            optimizer.step()
        return module.state_dict()

    erm = trained(lambda backbone: ERM(backbone, sgd))
    student = trained(
        lambda backbone: Distill(
            backbone,
            sgd,
            teacher=teacher_ids(teacher_store)[0],
            runs_dir=teacher_store / "runs",
            weights={"ce": 1.0, "kd": 0.0},
        )
    )
    assert list(erm) == list(student)
    for name, value in erm.items():
        assert torch.equal(value, student[name]), name


def test_an_ensemble_teacher_targets_the_mean_member_probability(teacher_store):
    ids = teacher_ids(teacher_store)
    student = distill(teacher_store, teacher=ids)
    assert student.teacher_ids == ids and len(student.teachers) == 2
    x = torch.randn(7, 1, 8, 8)
    members = [load_model(teacher_store / "runs" / "digits_small_cnn" / i) for i in ids]
    with torch.no_grad():
        expected = sum(F.softmax(m(x).squeeze(1) / 4.0, -1) for m in members) / 2
    mixed = student.mix(x, torch.zeros(7, dtype=torch.long), 0)
    targets, _ = student.teacher_targets(x, mixed, mixed.labels)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-6)
    # The teachers are no submodules, yet move and cast with the student (as Lightning's
    # .to(device) does).
    student.to(torch.float64)
    assert all(p.dtype == torch.float64 for m in student.teachers for p in m.parameters())


def test_under_mixing_the_teacher_scores_the_mixed_or_the_clean_batch(teacher_store):
    mixer = Mixup(num_classes=8, alpha=1.0, seed=0)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    on_mixed = distill(teacher_store, mixer=mixer)
    on_clean = distill(teacher_store, mixer=mixer, teacher_input="clean")
    mixed = on_mixed.mix(x, y, 0)
    teacher = on_mixed.teachers[0]
    with torch.no_grad():
        seen = F.softmax(teacher(mixed.x).squeeze(1) / 4.0, -1)
        clean = F.softmax(teacher(x).squeeze(1) / 4.0, -1)
    torch.testing.assert_close(on_mixed.teacher_targets(x, mixed, y)[0], seen)
    lam = mixed.lam[:, None]
    torch.testing.assert_close(
        on_clean.teacher_targets(x, mixed, y)[0], lam * clean + (1 - lam) * clean[mixed.partner]
    )


def test_the_hint_term_trains_an_adapter_onto_a_teacher_module(teacher_store):
    student = distill(teacher_store, weights={"ce": 1.0, "hint": 100.0, "dist": 1.0})
    assert student.adapter is not None
    teacher = student.teachers[0]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = sgd(student.trainable_parameters())
    for step in range(3):
        optimizer.zero_grad()
        student.training_loss(torch.randn(4, 1, 8, 8), torch.arange(4), step).backward()
        assert student.adapter.map.weight.grad.abs().sum() > 0
        optimizer.step()
    assert not any(p.grad is not None or p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(k.startswith("teacher") for k in student.state_dict())
    named = distill(
        teacher_store,
        weights={"kd": 1.0, "hint": 1.0},
        hint={"student": "body.1", "teacher": "head"},
    )
    assert (named.adapter.map.in_features, named.adapter.map.out_features) == (16, 8)
    named.training_loss(torch.randn(4, 1, 8, 8), torch.arange(4), 0).backward()
    with pytest.raises(ValueError, match=r"regime\.hint: .*no_such"):
        distill(teacher_store, weights={"hint": 1.0}, hint={"student": "no_such"})
    with pytest.raises(ValueError, match="needs one teacher model"):
        distill(teacher_store, teacher=teacher_ids(teacher_store), weights={"hint": 1.0})


def test_a_teacher_of_other_classes_is_one_line(teacher_store):
    nine = ModelInput(channels=1, height=8, width=8, num_classes=10)
    with pytest.raises(ValueError) as error:
        Distill(
            factory(model_input=nine),
            sgd,
            teacher=teacher_ids(teacher_store)[0],
            runs_dir=teacher_store / "runs",
        )
    message = str(error.value)
    assert "\n" not in message
    assert "1×8×8 images, 8 classes" in message and "1×8×8 images, 10 classes" in message


def test_impossible_options_name_their_key(teacher_store):
    for options, key in (
        ({"weights": {"kd": 1.0, "fitnet": 1.0}}, "regime.weights: unknown term"),
        ({"weights": {"ce": 0.0, "kd": 0.0}}, "every term has weight 0"),
        ({"temperature": 0}, "regime.temperature"),
        ({"teacher_input": "both"}, "regime.teacher_input"),
        ({"teacher": "name=nothing"}, "regime.teacher: no complete run"),
        ({"teacher": "/nowhere/last.ckpt"}, "regime.teacher: no checkpoint file"),
    ):
        with pytest.raises(ValueError, match=key):
            distill(teacher_store, **options)


# -- end to end ----------------------------------------------------------------------


def test_a_distilled_run_records_its_teachers_and_keeps_them_frozen_and_out(teacher_store, caplog):
    caplog.set_level("INFO", logger="sweeplab.regimes.distill")
    ids = teacher_ids(teacher_store)
    before = {
        i: torch.load(
            teacher_store / "runs" / "digits_small_cnn" / i / "checkpoints" / "last.ckpt",
            weights_only=True,
        )["state_dict"]
        for i in ids
    }
    cached = _run(teacher_store, "regime=distill", TEACHERS, *STUDENT)
    assert cached.status == "complete", cached.error
    assert "teacher logits cached for 512 training samples" in caplog.text
    record = read_record(cached.run_dir)
    assert record["sources"] == ids and record["config"]["regime"]["teacher"] == ids
    assert "train/distill/kd" in (cached.run_dir / "metrics.csv").read_text()
    state = torch.load(cached.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(k.startswith("backbone.") for k in state["state_dict"]), list(state["state_dict"])
    for i in ids:
        after = torch.load(
            teacher_store / "runs" / "digits_small_cnn" / i / "checkpoints" / "last.ckpt",
            weights_only=True,
        )["state_dict"]
        assert all(torch.equal(before[i][k], after[k]) for k in after)
    # The same two teachers named by id are the same run; the uncached run matches it.
    again = _run(teacher_store, "regime=distill", f"regime.teacher=[{ids[1]},{ids[0]}]", *STUDENT)
    assert again.status == "skipped" and again.run_dir == cached.run_dir
    uncached = _run(
        teacher_store, "regime=distill", TEACHERS, "regime.cache_teacher=false", *STUDENT
    )
    assert uncached.status == "complete", uncached.error
    assert caplog.text.count("teacher logits cached") == 1
    other = torch.load(uncached.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in state["state_dict"].items():
        torch.testing.assert_close(other["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    model = load_model(cached.run_dir)
    assert isinstance(model, Distill) and "teachers" not in dict(model.named_children())


class FakeLogger(Logger):
    """Keeps what the run sends it; as ``WandbLogger`` below, what W&B's run would get."""

    received: ClassVar[list[FakeLogger]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.summary: dict[str, Any] = {}  # W&B: experiment.summary
        self.images: dict[str, Any] = {}  # W&B: experiment.log(...)
        self.metrics: dict[str, Any] = {}
        self.hyperparams: dict[str, Any] = {}
        type(self).received.append(self)

    name = property(lambda self: "fake")
    version = property(lambda self: "0")
    experiment = property(lambda self: self)

    def log(self, values: dict, commit: bool = False) -> None:
        self.images.update(values)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.hyperparams.update(params if isinstance(params, dict) else {})

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)


class WandbLogger(FakeLogger):  # the class name is what the summary publishing dispatches on
    received: ClassVar[list[FakeLogger]] = []


def test_the_loggers_get_the_teachers_lineage_and_metrics_beside_the_students(teacher_store):
    loggers = [
        "logger=wandb",
        "logger.wandb._target_=tests.test_distill.WandbLogger",
        "+logger.other._target_=tests.test_distill.FakeLogger",
    ]
    WandbLogger.received.clear()
    FakeLogger.received.clear()
    student = [*STUDENT, "regime.temperature=2", "eval.plots=true"]  # eval is not in the run id
    run = _run(teacher_store, "regime=distill", TEACHERS, *student, *loggers)
    assert run.status == "complete", run.error
    (wandb,), (other,) = WandbLogger.received, FakeLogger.received
    ids = teacher_ids(teacher_store)
    teachers = [read_record(teacher_store / "runs" / "digits_small_cnn" / i) for i in ids]
    record = read_record(run.run_dir)
    assert wandb.summary["teacher/run_ids"] == ",".join(ids) == other.hyperparams["teacher/run_ids"]
    for key in TEACHER_METRICS:  # the mean over the ensemble teacher's runs, from their records
        mean = sum(t["metrics"][key] for t in teachers) / len(teachers)
        assert wandb.summary[f"teacher/{key}"] == pytest.approx(mean)
        assert other.metrics[f"teacher/{key}"] == pytest.approx(mean)
        assert wandb.summary[key] == record["metrics"][key]
    assert wandb.summary["teacher/num_runs"] == 2
    assert not [k for k in record["metrics"] if k.startswith("teacher/")]  # not this run's own
    assert (run.run_dir / "plots" / "teacher_vs_student.png").is_file()
    assert "plots/teacher_vs_student" in wandb.images
    assert record["artifacts"]["plots/teacher_vs_student"] == "plots/teacher_vs_student.png"


def test_a_checkpoint_path_teacher_stays_out_of_the_sources(teacher_store):
    path = teacher_store / "runs" / "digits_small_cnn" / teacher_ids(teacher_store)[0]
    ckpt = path / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        [f"paths.root_dir={teacher_store}", "regime=distill", f"regime.teacher={ckpt}", *STUDENT]
    )
    from sweeplab.tracking.lineage import pin_sources

    assert pin_sources(cfg) == [] and cfg.regime.teacher == str(ckpt)
    student = distill(teacher_store, teacher=str(ckpt))
    assert student.teacher_ids == [] and len(student.teachers) == 1


def test_the_run_page_shows_the_teachers_metrics_beside_the_students(tmp_path, monkeypatch):
    import json
    import sys

    from streamlit.testing.v1 import AppTest

    from sweeplab.dashboard import app
    from sweeplab.tracking.record import write_record
    from tests.test_dashboard_data import make_run

    runs = tmp_path / "runs"
    make_run(runs, "teacher0", [], {"test/cls/acc": 0.97, "test/cls/nll": 0.1})
    student = make_run(runs, "student0", ["regime=distill"], {"test/cls/acc": 0.93})
    record = json.loads((student / "record.json").read_text())
    record["sources"] = ["teacher0"]
    write_record(student, record)
    monkeypatch.setenv("SWEEPLAB_RUNS_DIR", str(runs))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    at = AppTest.from_file(app.__file__, default_timeout=60)
    at.session_state["page"], at.session_state["run"] = "Run", "student0"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {"Made from", "Teacher vs student"} <= {h.value for h in at.subheader}
    frame = next(d.value for d in at.dataframe if "model" in d.value)
    assert list(frame["model"]) == ["student student0", "teacher teacher0"]
    assert list(frame["test/cls/acc"]) == [0.93, 0.97]
