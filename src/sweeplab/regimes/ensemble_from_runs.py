"""An ensemble of finished runs: no training, the members come from the store.

``regime.runs`` is a run selector (``"name=mnist_small_cnn seed=0,1,2,3,4"``) or
a list of run ids. The runner pins a selector to the sorted ids it matches before
the run starts (:mod:`sweeplab.tracking.lineage`): the record lists them under
``sources``, the run id hashes them, and the stored config rebuilds exactly these
members. Each member is loaded frozen by :func:`~sweeplab.regimes.loading.load_model`;
a member that is itself an ensemble contributes all of its members. The members
must have been trained on this run's data (same result-relevant data config, image
shape and classes); the evaluation is the ordinary one on the mean probability.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.augment.base import Mixer
from sweeplab.regimes.base import BackboneFactory, Regime
from sweeplab.regimes.ensemble import PaddedHead
from sweeplab.regimes.registry import register_regime
from sweeplab.tracking.identity import result_config
from sweeplab.tracking.lineage import source_ids
from sweeplab.tracking.runs import Run, open_run


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}.{key}"))
    return flat


def data_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``{data.key: [value per config]}`` for the result-relevant data keys that differ."""
    flats = [
        _flat(result_config({"data": c.get("data") or {}}, pin_sources=False)["data"], "data")
        for c in configs
    ]
    keys = sorted({key for flat in flats for key in flat})
    values = {key: [flat.get(key) for flat in flats] for key in keys}
    return {key: v for key, v in values.items() if any(x != v[0] for x in v)}


def _describe(differences: dict[str, list[Any]]) -> str:
    return "; ".join(
        f"{key}: {', '.join(str(v) for v in dict.fromkeys(map(str, vals)))}"
        for key, vals in differences.items()
    )


def check_same_data(runs: Sequence[Run], this_config: dict[str, Any] | None, model_input) -> None:
    """Members of one data set and split, image shape and class count, and this run's data.

    The split matters as much as the data set: ``data.seed`` draws the val split and
    any training subset, so members of different ``data.seed`` would each have
    trained on samples of the others' val split, which fits the ensemble's
    temperature and detector settings.
    """
    from sweeplab.regimes.loading import model_input_of

    ids = ", ".join(run.run_id for run in runs)
    differences = data_differences([run.config for run in runs])
    if differences:
        raise ValueError(
            f"regime.runs: runs {ids} were trained on different data or splits "
            f"({_describe(differences)}); an ensemble needs members of one data set and split: "
            "train them with one data.seed (e.g. data.seed=0 seed=0,1,2,3,4)"
        )
    if this_config is not None:
        differences = data_differences([runs[0].config, this_config])
        if differences:
            raise ValueError(
                f"regime.runs: this run's data differs from its members' "
                f"({_describe(differences)}; members first); compose the members' data "
                f"options (see {runs[0].config_file})"
            )
    inputs = {run.run_id: model_input_of(run) for run in runs}
    if model_input is not None:
        inputs["this run"] = model_input
    if len(set(inputs.values())) > 1:
        listing = ", ".join(f"{key}: {value.describe()}" for key, value in inputs.items())
        raise ValueError(f"regime.runs: the members disagree on their input: {listing}")


@register_regime("ensemble_from_runs")
class EnsembleFromRuns(Regime):
    """Ensemble of finished runs of the store: no training, lineage in the record.

    Args:
        runs: a run selector (``sweeplab runs`` filter grammar) or a list of run ids.
        checkpoint: which checkpoint of each member, ``last`` or ``best``.
        runs_dir: the store (``paths.runs_dir``).
        data_json: this run's data config as JSON (``${json:${data}}``; as a node Hydra
            would instantiate it), checked against the members'.
    """

    trains = False

    def __init__(
        self,
        runs: str | Sequence[str],
        backbone: BackboneFactory | None = None,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "ensemble_from_runs",
        mixer: Mixer | None = None,
        checkpoint: str = "last",
        runs_dir: str | os.PathLike | None = None,
        data_json: str | None = None,
    ) -> None:
        from sweeplab.regimes.loading import load_model

        super().__init__(None, None, label_smoothing, check_finite_every, name)
        if checkpoint not in ("last", "best"):
            raise ValueError(f"regime.checkpoint must be last or best, got {checkpoint!r}")
        try:
            self.run_ids = source_ids(runs, None if runs_dir is None else str(runs_dir))
        except ValueError as exc:
            raise ValueError(f"regime.runs: {exc}") from None
        if len(self.run_ids) < 2:
            raise ValueError(
                f"regime.runs matches one run ({self.run_ids[0]}); an ensemble needs ≥ 2 "
                "(widen the selector, e.g. seed=0,1,2)"
            )
        member_runs = [open_run(run_id, runs_dir) for run_id in self.run_ids]
        this_config = None if data_json is None else {"data": json.loads(data_json)}
        check_same_data(member_runs, this_config, getattr(backbone, "model_input", None))
        self.sources = nn.ModuleList(load_model(run, checkpoint) for run in member_runs)
        self.attach_mixer(mixer, nn.Identity())

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every source's member logits ``[B, M, C]`` and features (zero-padded to one width)."""
        parts = [source.predict_eval(x) for source in self.sources]
        logits = torch.cat([part[0] for part in parts], dim=1)
        width = max(part[1].shape[-1] for part in parts)
        features = torch.cat([F.pad(part[1], (0, width - part[1].shape[-1])) for part in parts], 1)
        return logits, features

    def member_heads(self) -> list[nn.Module]:
        """Every source's heads, in member order; none if a source has none (the
        head-based detectors are then skipped) or widths differ where one is unknown."""
        per_source = [list(source.member_heads()) for source in self.sources]
        if not all(per_source):
            return []
        heads = [head for heads in per_source for head in heads]
        widths = [_in_width(head) for head in heads]
        if len(set(widths)) == 1:
            return heads
        if None in widths:
            return []
        return [PaddedHead(head, width) for head, width in zip(heads, widths, strict=True)]


def _in_width(head: nn.Module) -> int | None:
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return module.in_features
    return None
