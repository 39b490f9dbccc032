"""Every option of every config group composes, and instantiates where this machine can run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_class, instantiate

from sweeplab.configs import config_dir
from sweeplab.tracking.loggers import build_loggers
from tests.conftest import compose_config

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in (
        "data",
        "backbone",
        "augment",
        "regime",
        "regime/optimizer",
        "regime/scheduler",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "debug",
        "experiment",
        "hydra/launcher",
    ):
        assert options(group), group


@pytest.mark.parametrize("option", options("data"))
def test_data_options_instantiate(option, tmp_path):
    cfg = compose_config([f"data={option}", f"paths.root_dir={tmp_path}"])
    datamodule = instantiate(cfg.data)
    assert datamodule.name == cfg.data.name


@pytest.mark.parametrize("option", options("backbone"))
def test_backbone_options_instantiate(option):
    cfg = compose_config(backbone_overrides(option))
    model = instantiate(cfg.backbone, num_classes=10, in_chans=1, image_size=8)
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 10)
    assert model.features(x).shape == (2, model.num_features)


@pytest.mark.parametrize("option", options("augment"))
def test_augment_options_instantiate(option):
    cfg = compose_config([f"augment={option}", "regime.label_smoothing=0.1"])
    mixer = instantiate(cfg.augment, num_classes=10)
    backbone = instantiate(cfg.backbone, num_classes=10, in_chans=1, image_size=8)
    module = instantiate(cfg.regime, backbone=backbone, mixer=mixer)
    assert module.mixer is mixer and mixer.label_smoothing == 0.1
    mixed = mixer.mix(torch.randn(5, 1, 8, 8), torch.arange(5))
    assert mixed.target.shape[1] == 10
    torch.testing.assert_close(mixed.target.sum(dim=1), torch.ones(mixed.target.shape[0]))
    assert torch.isfinite(mixer.loss(mixed.forward(backbone), mixed))


@pytest.mark.parametrize("optimizer", options("regime/optimizer"))
@pytest.mark.parametrize("scheduler", options("regime/scheduler"))
def test_regime_options_instantiate(optimizer, scheduler):
    cfg = compose_config([f"regime/optimizer={optimizer}", f"regime/scheduler={scheduler}"])
    backbone = instantiate(cfg.backbone, num_classes=10, in_chans=1, image_size=8)
    module = instantiate(cfg.regime, backbone=backbone)
    optim = module.optimizer_factory(module.parameters())
    module.scheduler_factory(optim, total_steps=100, steps_per_epoch=10)


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(option, tmp_path):
    cfg = compose_config([f"trainer={option}"])
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.devices is not None  # composes; instantiation needs a GPU
        return
    trainer = instantiate(cfg.trainer, default_root_dir=str(tmp_path), logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("option", options("logger"))
def test_logger_options(option, tmp_path):
    cfg = compose_config([f"logger={option}"])
    loggers = build_loggers(cfg.logger, tmp_path, "demo/abc", wandb_id="abc-123")
    names = {type(logger).__name__ for logger in loggers}
    assert "RunCSVLogger" in names
    if option == "wandb":
        assert "WandbLogger" in names


@pytest.mark.parametrize("option", options("callbacks"))
def test_callback_options(option, tmp_path):
    cfg = compose_config([f"callbacks={option}"])
    for callback_cfg in cfg.callbacks.values():
        instantiate(callback_cfg)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_options(option):
    cfg = compose_config([f"debug={option}"])
    assert "debug" in cfg.tags


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_options(option):
    cfg = compose_config([f"experiment={option}"])
    backbone = instantiate(cfg.backbone, num_classes=10, in_chans=1, image_size=8)
    instantiate(cfg.regime, backbone=backbone)


@pytest.mark.parametrize("option", options("hydra/launcher"))
def test_launcher_presets_compose(option):
    cfg = compose_config([f"hydra/launcher={option}"], return_hydra_config=True)
    target = cfg.hydra.launcher._target_
    assert target.startswith(("hydra_plugins.", "hydra._internal.core_plugins."))
    if option in ("local", "joblib", "slurm"):  # joblib and slurm plugins are in the dev extra
        assert get_class(target) is not None


def test_unknown_option_lists_valid_ones():
    with pytest.raises(MissingConfigException) as excinfo:
        compose_config(["backbone=resnet9000"])
    message = str(excinfo.value)
    assert "resnet9000" in message
    for option in options("backbone"):
        assert option in message


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        compose_config(["data.batchsize=3"])


def test_configs_ship_inside_the_wheel(tmp_path):
    """An installed sweeplab (no checkout around it) finds every config file."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(repo),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    wheel = next((tmp_path / "dist").glob("sweeplab-*.whl"))
    shutil.rmtree(repo / "build", ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("sweeplab/conf/")}
        archive.extractall(tmp_path / "site")
    expected = {f"sweeplab/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert expected and expected == shipped
    found = subprocess.run(
        [sys.executable, "-c", "from sweeplab.configs import config_dir; print(config_dir())"],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == (tmp_path / "site" / "sweeplab" / "conf").resolve()


# A subnet has no default architecture.
BACKBONE_REQUIRED = {"subnet": ["backbone.arch=d1w1k3-d2w0.5k5-d1w0.75k3"]}


def backbone_overrides(option: str) -> list[str]:
    """The overrides that choose backbone ``option``, with the values it needs."""
    return [f"backbone={option}", *BACKBONE_REQUIRED.get(option, [])]


# Regimes built from finished runs need a store; tests/test_ensembles.py, test_distill.py,
# test_merge.py and test_nas.py (inherit) cover them.
FROM_RUNS = ("ensemble_from_runs", "distill", "merge", "inherit")
TRAINED_REGIMES = [o for o in options("regime") if o not in FROM_RUNS]


@pytest.mark.parametrize("option", options("backbone"))
@pytest.mark.parametrize("regime", TRAINED_REGIMES)
def test_every_regime_builds_on_every_backbone(regime, option):
    from sweeplab.assembly import ModelInput, build_regime

    cfg = compose_config([f"regime={regime}", *backbone_overrides(option)])
    model_input = ModelInput(channels=1, height=8, width=8, num_classes=10)
    if regime == "supernet" and option != "supernet":
        with pytest.raises(Exception, match=f"but backbone={cfg.backbone.name} is a"):
            build_regime(cfg, model_input)
        return
    module = build_regime(cfg, model_input).eval()
    images = torch.randn(2, 1, 8, 8)
    if regime == "snapshot":  # its members are the weights at the ends of training cycles
        with pytest.raises(RuntimeError, match=r"0 of regime\.cycles=3 snapshots"):
            module.predict_eval(images)
        return
    with torch.no_grad():
        logits, features = module.predict_eval(images)
    members = logits.shape[1]
    assert logits.shape == (2, members, 10) and features.shape[:2] == (2, members)
    assert (members == 1) == (regime in ("erm", "supernet"))
    assert len(module.member_heads()) == members


@pytest.mark.parametrize("augment", options("augment"))
@pytest.mark.parametrize("regime", TRAINED_REGIMES)
def test_every_regime_trains_a_step_with_every_mixer(regime, augment):
    from sweeplab.assembly import ModelInput, build_regime

    nets = ["backbone=supernet", "backbone.stem_width=4"] if regime == "supernet" else []
    cfg = compose_config([f"regime={regime}", f"augment={augment}", *nets, "backbone.widths=[4,8]"])
    module = build_regime(cfg, ModelInput(channels=1, height=8, width=8, num_classes=10))
    if hasattr(module, "shared_batches"):
        module.shared_batches = True  # outside a trainer there is no data module to draw from
    loss = module.training_loss(torch.randn(6, 1, 8, 8), torch.arange(6), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
