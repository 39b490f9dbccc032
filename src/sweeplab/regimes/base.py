"""The Regime base: what every training regime shares, so each regime is one small file.

A regime is a LightningModule that owns its training loss and declares what the
evaluation may ask of it. This base holds the rest: the optimiser and schedule
protocol, the device-side epoch-loss sum that doubles as the NaN/Inf watch, the
``val/cls/*`` logging of the members' mean probability, the batch mixer and its
preview picture.

A subclass builds its model(s) from the backbone *factory* the runner passes
(``backbone()`` makes one freshly initialised backbone sized for the data; called
M times it makes M members), calls :meth:`attach_mixer`, and implements
:meth:`training_loss` and :meth:`predict_eval`. A regime that does not train (a
merge, an ensemble of finished runs) sets ``trains = False``; the runner then skips
fitting and evaluates it as built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeplab.augment.base import Mixer
from sweeplab.augment.identity import NoMix
from sweeplab.augment.preview import PREVIEW_FILE, write_preview

# ``factory()`` → a new backbone sized for the data (sweeplab.assembly.BackboneFactory).
BackboneFactory = Callable[..., nn.Module]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run cannot continue meaningfully."""


def check_optimizer(optimizer: Callable) -> None:
    """Catch impossible optimizer values before training, naming the config key."""
    keywords = optimizer.keywords if isinstance(optimizer, partial) else {}
    lr = keywords.get("lr")
    if lr is not None and not lr > 0:
        raise ValueError(f"regime.optimizer.lr must be > 0, got {lr}")
    weight_decay = keywords.get("weight_decay")
    if weight_decay is not None and weight_decay < 0:
        raise ValueError(f"regime.optimizer.weight_decay must be ≥ 0, got {weight_decay}")


def build_backbone(backbone: BackboneFactory | nn.Module, seed: int | None = None) -> nn.Module:
    """One backbone from a factory (or the module itself, for callers that built it).

    With ``seed``, the weights are drawn from that seed without disturbing the global
    random stream, so member ``m`` of an ensemble is the same whatever else ran first.
    """
    if isinstance(backbone, nn.Module):
        return backbone
    if seed is None:
        return backbone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return backbone()


def mean_probability_log(member_logits: Tensor) -> Tensor:
    """``log mean_m softmax(z_m)`` of ``[B, M, C]`` logits: the ensemble's log-probabilities."""
    if member_logits.shape[1] == 1:
        return F.log_softmax(member_logits[:, 0], dim=-1)
    log_probs = F.log_softmax(member_logits, dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(member_logits.shape[1])


class Regime(pl.LightningModule):
    """Base of every regime. Subclasses implement ``training_loss`` and ``predict_eval``.

    Args:
        optimizer: a ``_partial_`` optimizer; called with the trainable parameters.
        scheduler: a ``_partial_`` schedule from :mod:`sweeplab.regimes.schedules`, or None.
        label_smoothing: smoothing of hard labels when no mixer is configured.
        check_finite_every: steps between reads of the device-side loss sum.
        name: the regime's name, as in ``conf/regime/<name>.yaml``.
    """

    #: False for regimes that are complete when built (merges, ensembles of runs).
    trains: ClassVar[bool] = True
    #: True for a regime that does not train but starts from ``init_from``'s weights.
    starts_from_run: ClassVar[bool] = False
    #: The run id ``init_from`` loaded this regime's weights from, once it has.
    init_source: str | None = None
    registered_name: ClassVar[str] = ""
    #: What the model was built for (a :class:`sweeplab.assembly.ModelInput`), set on assembly.
    model_input = None

    def __init__(
        self,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        check_finite_every: int = 20,
        name: str = "regime",
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"regime.label_smoothing must be in [0, 1), got {label_smoothing}")
        if check_finite_every < 1:
            raise ValueError(
                f"regime.check_finite_every must be a positive integer, got {check_finite_every}"
            )
        if optimizer is None and self.trains:
            raise ValueError(f"regime {name!r} trains, so it needs regime.optimizer")
        if optimizer is not None:
            check_optimizer(optimizer)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.check_finite_every = check_finite_every
        self.regime_name = name
        self.mixer: Mixer | None = None  # set by attach_mixer once the model exists
        # The epoch's loss sum stays on the device and is read every few steps: a NaN
        # or Inf loss makes the sum non-finite, so one in-place add per step both
        # feeds the epoch mean and watches for divergence, without a host sync.
        self.register_buffer("_loss_sum", torch.zeros(()), persistent=False)
        self._loss_count = 0

    # -- what a regime implements ----------------------------------------------------

    def training_loss(self, x: Tensor, y: Tensor, batch_idx: int) -> Tensor:
        """The scalar loss of one training batch (mix it with :meth:`mix` if it should be)."""
        raise NotImplementedError(f"{type(self).__name__} does not define training_loss")

    def predict_eval(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member logits ``[B, M, C]`` and per-member pooled features ``[B, M, D]``."""
        raise NotImplementedError(f"{type(self).__name__} does not define predict_eval")

    def member_heads(self) -> list[nn.Module]:
        """The classifier of each member (features → logits), for head-based detectors.

        By default the ``head`` of ``self.backbone`` if there is one; a regime with
        several members returns one head per member, in member order.
        """
        head = getattr(getattr(self, "backbone", None), "head", None)
        return [head] if isinstance(head, nn.Module) else []

    def source_summary(
        self, metrics: Mapping[str, float], plots_dir: Path | None
    ) -> dict[str, Any]:
        """Summary values about the runs this one is made from, for the loggers.

        The runner publishes them beside ``metrics`` (this run's own, final) to every
        logger that receives the summary, but keeps them out of ``record["metrics"]``:
        they are other runs' numbers, read from those runs' records. With ``plots_dir``
        (``eval.plots`` on) a regime may draw a picture there; it is published with the
        run's other plots. By default nothing: only a regime whose sources mean
        something beside its own metrics (distillation's teachers) defines it.
        """
        return {}

    def write_outputs(
        self, run_dir: Path, plots_dir: Path | None
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Metrics and files of the regime's own making, once the run is evaluated.

        The runner stores the metrics in ``record["metrics"]`` beside the evaluation's
        and the files (written under ``run_dir``, returned as paths relative to it) as
        artifacts; with ``plots_dir`` (``eval.plots`` on) a regime may draw pictures
        there. By default nothing: a merge's interpolation curve is one such output.
        """
        return {}, {}

    def prepare(self, datamodule) -> None:
        """Work on the set-up data before fitting or evaluating; by default nothing.

        The runner calls it once the regime is built (after ``init_from``). A regime
        made from data it does not train on does that work here: a merge recomputes
        BatchNorm statistics on training images and picks ingredients on val. A run
        reloaded from the store skips it, since its checkpoint holds the result.
        """

    # -- mixing ----------------------------------------------------------------------

    def attach_mixer(self, mixer: Mixer | None, model: nn.Module) -> None:
        """Train with ``mixer`` (checked against ``model``), or the identity with smoothing."""
        num_classes = getattr(model, "num_classes", None)
        if mixer is None:
            mixer = NoMix(num_classes=num_classes, label_smoothing=self.label_smoothing)
        else:
            if num_classes is not None and mixer.num_classes != num_classes:
                raise ValueError(
                    f"the mixer makes targets for {mixer.num_classes} classes but the backbone "
                    f"predicts {num_classes}"
                )
            if self.label_smoothing not in (0.0, mixer.label_smoothing):
                raise ValueError(
                    f"regime.label_smoothing={self.label_smoothing} and augment.label_smoothing="
                    f"{mixer.label_smoothing} disagree; set only one (augment.label_smoothing "
                    "follows regime.label_smoothing unless set)"
                )
            mixer.check_backbone(model)
        self.mixer = mixer
        self.label_smoothing = mixer.label_smoothing

    def mix(self, x: Tensor, y: Tensor, batch_idx: int, mixer: Mixer | None = None):
        """This step's mix, drawn from (seed, epoch, batch, rank) so a resume repeats it.

        ``mixer`` is another mixer to draw from (an ensemble member's own), by default
        the attached one. Outside a trainer (a notebook, a test) it is epoch 0, rank 0.
        """
        trainer = self._trainer
        return (mixer or self.mixer).mix(
            x,
            y,
            epoch=self.current_epoch,
            batch_index=batch_idx,
            max_epochs=None if trainer is None else trainer.max_epochs,
            rank=self.global_rank,
        )

    def on_train_start(self) -> None:
        """Save a picture of one mixed training batch in the run directory, once per run."""
        if self.mixer is None:
            raise RuntimeError(f"{type(self).__name__} never called attach_mixer in __init__")
        datamodule = getattr(self.trainer, "datamodule", None)
        path = Path(self.trainer.default_root_dir) / PREVIEW_FILE
        if self.trainer.is_global_zero and datamodule is not None and not path.exists():
            write_preview(self.mixer, datamodule, path, self.device)

    # -- training loop ---------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.training_loss(x, y, batch_idx)
        self.track_loss(loss, x.shape[0], batch_idx)
        return loss

    def track_loss(self, loss: Tensor, batch_size: int, batch_idx: int) -> None:
        """Accumulate the epoch's mean loss and watch for NaN/Inf, without syncing."""
        self._loss_sum.add_(loss.detach(), alpha=batch_size)
        self._loss_count += batch_size
        if (batch_idx + 1) % self.check_finite_every == 0:
            self._raise_if_nonfinite()

    def running_loss(self) -> float | None:
        """The mean training loss of the epoch so far (``None`` before its first step).

        Reading it waits for the device: it is for the progress bar, which reads it only
        when it redraws.
        """
        if not self._loss_count:
            return None
        return float(self._loss_sum) / self._loss_count

    def on_train_epoch_start(self) -> None:
        self._loss_sum.zero_()
        self._loss_count = 0

    def on_train_epoch_end(self) -> None:
        self._raise_if_nonfinite()
        mean_loss = (self._loss_sum / max(self._loss_count, 1)).float()
        self.log("train/cls/loss", mean_loss, on_epoch=True, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True)

    def _raise_if_nonfinite(self) -> None:
        if not bool(torch.isfinite(self._loss_sum)):
            raise NonFiniteLossError(
                f"training loss became NaN or infinite in epoch {self.current_epoch} "
                f"(by global step {self.global_step}); lower regime.optimizer.lr, add warm-up "
                "(regime.scheduler.warmup_epochs) or gradient clipping (trainer.gradient_clip_val)"
            )

    # -- validation ------------------------------------------------------------------

    def validation_logits(self, x: Tensor) -> Tensor:
        """Member logits ``[B, M, C]`` scored on val; by default those of :meth:`predict_eval`."""
        return self.predict_eval(x)[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """``val/cls/acc`` and ``val/cls/nll`` of the members' mean probability."""
        x, y = batch
        log_probs = mean_probability_log(self.validation_logits(x))
        size = x.shape[0]
        acc = (log_probs.argmax(dim=1) == y).float().mean()
        self.log("val/cls/acc", acc, on_epoch=True, batch_size=size, sync_dist=True)
        nll = F.nll_loss(log_probs, y)
        self.log("val/cls/nll", nll, on_epoch=True, batch_size=size, sync_dist=True)

    # -- optimisation ----------------------------------------------------------------

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: every parameter that requires gradients."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(1, int(min(self.trainer.estimated_stepping_batches, 2**31)))
        max_epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        steps_per_epoch = max(1, total_steps // max_epochs)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
