"""A finished supernet run opened for NAS work: its supernet, its data and how it scores.

``sweeplab nas search`` and ``sweeplab nas rank`` both start here. The supernet comes
from the run's checkpoint (:func:`sweeplab.regimes.loading.load_model`); the data is
set up from the run's stored config, so val and the BatchNorm calibration images are
the ones the run itself used; test is never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import Tensor

from sweeplab.assembly import setup_data
from sweeplab.models.supernet import Supernet
from sweeplab.nas.flops import CostTable
from sweeplab.nas.search import SubnetScorer
from sweeplab.regimes.loading import load_model
from sweeplab.regimes.supernet import SupernetTraining, calibration_images
from sweeplab.tracking.runs import Run, RunError, open_run

NAS_DIR = "nas"
# The supernet run's overrides that do not carry over to training one of its subnets.
_SUPERNET_ONLY = ("regime=", "regime.", "backbone=", "backbone.arch=")
_CARRIED_REGIME_KEYS = ("regime.optimizer.", "regime.scheduler.", "regime.label_smoothing=")


@dataclass
class SupernetRun:
    run: Run
    regime: SupernetTraining
    datamodule: Any
    calibration: Tensor

    @classmethod
    def open(cls, spec: str, runs_dir: str | os.PathLike | None = None) -> SupernetRun:
        run = open_run(spec, runs_dir)
        regime = load_model(run)
        if not isinstance(regime, SupernetTraining):
            raise RunError(
                f"run {run.run_id} was trained with regime={regime.regime_name}, not a "
                "supernet; give a run of regime=supernet"
            )
        datamodule = setup_data(OmegaConf.create(run.config))
        calibration = calibration_images(datamodule, regime.bn_calibration_images, regime.seed)
        return cls(run, regime, datamodule, calibration)

    @property
    def supernet(self) -> Supernet:
        return self.regime.backbone

    @property
    def nas_dir(self) -> Path:
        return self.run.path / NAS_DIR

    def costs(self) -> CostTable:
        return CostTable(self.supernet, self.nas_dir / "costs.json")

    def scorer(self, policy: str | None = None) -> SubnetScorer:
        """Val accuracy of inherited subnets under ``policy`` (by default the run's)."""
        policy = policy or self.regime.bn_policy
        return SubnetScorer(
            self.supernet,
            self.datamodule.split("val"),
            lambda x: self.datamodule.preprocess(x, train=False),
            policy,
            self.calibration if policy == "recalibrate" else None,
            int(getattr(self.datamodule, "eval_batch_size", 512)),
        )

    def subnet_overrides(self, arch: str, extra: list[str] = ()) -> list[str]:
        """The overrides that train subnet ``arch`` standalone with this run's data and recipe."""
        kept = [
            o
            for o in self.run.record.get("overrides") or []
            if not o.startswith(_SUPERNET_ONLY)
            or o.startswith(_CARRIED_REGIME_KEYS)
            or (o.startswith("backbone.") and not o.startswith("backbone.arch="))
        ]
        return [*kept, "regime=erm", "backbone=subnet", f"backbone.arch={arch}", *extra]
