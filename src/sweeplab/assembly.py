"""Assembly: config → data, backbone factory, mixer and regime, for every app that needs them.

``sweeplab train``, ``sweeplab eval``, the run loader and the benchmarks all build
models here, so a model rebuilt from a finished run is built exactly as it was
trained. The regime receives a backbone *factory* sized for the data, not a built
backbone, so it can make one model, M seeded members or an elastic supernet.

What a model is built for (image shape and class count) is a :class:`ModelInput`;
the runner stores it in the record so a run can be rebuilt without its data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

MODEL_INPUT_KEY = "model_input"


@dataclass(frozen=True)
class ModelInput:
    """The input a model is built for: images ``[channels, height, width]``, ``num_classes``."""

    channels: int
    height: int
    width: int
    num_classes: int

    @classmethod
    def of(cls, datamodule: Any) -> ModelInput:
        """What a set-up data module feeds the model."""
        channels, height, width = (int(v) for v in datamodule.image_shape)
        return cls(channels, height, width, int(datamodule.num_classes))

    def to_record(self) -> dict[str, Any]:
        return {
            "image_shape": [self.channels, self.height, self.width],
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> ModelInput:
        """Read :meth:`to_record`'s form back; raises ``ValueError`` if it is malformed."""
        try:
            channels, height, width = (int(v) for v in value["image_shape"])
            return cls(channels, height, width, int(value["num_classes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed {MODEL_INPUT_KEY} {dict(value)!r}") from exc

    def describe(self) -> str:
        return f"{self.channels}×{self.height}×{self.width} images, {self.num_classes} classes"


def setup_data(cfg: DictConfig):
    """The data module of ``cfg``, prepared and set up for fitting."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


class BackboneFactory:
    """``factory()`` → a freshly initialised backbone of ``cfg.backbone`` sized for the data.

    Keyword arguments override the config's options (a supernet's subnet, a member's
    width). Each call draws new weights from the global random stream, and a bad
    option fails as Hydra reports it, naming the ``backbone`` node.
    """

    def __init__(self, backbone_cfg: DictConfig, model_input: ModelInput) -> None:
        self.config = backbone_cfg
        self.model_input = model_input

    def __call__(self, **overrides: Any):
        from hydra.utils import instantiate

        sizes = {
            "num_classes": self.model_input.num_classes,
            "in_chans": self.model_input.channels,
            "image_size": self.model_input.height,
        }
        return instantiate(self.config, **sizes, **overrides)

    def for_option(self, option: str) -> BackboneFactory:
        """The factory of another ``conf/backbone`` option, for the same data.

        Heterogeneous ensembles build members of several backbones in one run; the
        option's file is read as it is, without this run's ``backbone.*`` overrides.
        """
        from omegaconf import OmegaConf

        from sweeplab.configs import config_dir

        folder = config_dir() / "backbone"
        path = folder / f"{option}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            raise ValueError(f"unknown backbone option {option!r}; known: {known}")
        return BackboneFactory(OmegaConf.load(path), self.model_input)

    def __repr__(self) -> str:
        target = self.config.get("_target_")
        return f"BackboneFactory({target}, {self.model_input.describe()})"


def build_regime(cfg: DictConfig, model_input: ModelInput):
    """The regime of ``cfg`` around its backbone factory and mixer, for ``model_input``."""
    from hydra.utils import instantiate

    from sweeplab.regimes.base import Regime
    from sweeplab.regimes.registry import list_regimes

    augment = cfg.get("augment")
    mixer = None if augment is None else instantiate(augment, num_classes=model_input.num_classes)
    factory = BackboneFactory(cfg.backbone, model_input)
    regime = instantiate(cfg.regime, backbone=factory, mixer=mixer)
    if not isinstance(regime, Regime):
        target = cfg.regime.get("_target_")
        raise TypeError(
            f"regime._target_={target} made a {type(regime).__name__}, not a sweeplab Regime; "
            f"subclass sweeplab.regimes.base.Regime (built-in regimes: {', '.join(list_regimes())})"
        )
    regime.model_input = model_input
    return regime


def build_components(cfg: DictConfig, announce: Callable[[str], None] | None = None):
    """The data (set up) and the regime around its backbone factory and mixer, ready to run.

    This is the runner's path, not the run loader's: here the regime starts from
    ``init_from``'s weights and does its data-dependent preparation
    (:meth:`~sweeplab.regimes.base.Regime.prepare`); a reloaded run gets both from its
    checkpoint instead. ``announce`` is told each step as it starts (the runner's status
    lines).
    """
    announce = announce or (lambda message: None)
    announce(f"loading data: {cfg.data.name}")
    datamodule = setup_data(cfg)
    announce(f"building the model: {cfg.backbone.get('name')}, regime {cfg.regime.get('name')}")
    regime = build_regime(cfg, ModelInput.of(datamodule))
    if cfg.get("init_from") is not None:
        _init_from(cfg, regime)
    regime.prepare(datamodule)
    return datamodule, regime


def _init_from(cfg: DictConfig, regime) -> None:
    from sweeplab.regimes.init_from import apply_init_from
    from sweeplab.tracking.identity import compute_run_id

    try:
        this_run = f"this run {compute_run_id(cfg)}"
    except ValueError:
        this_run = "this run"
    runs_dir = (cfg.get("paths") or {}).get("runs_dir")
    head = cfg.get("init_from_head") or "keep"
    apply_init_from(regime, cfg.init_from, head, runs_dir, this_run)
