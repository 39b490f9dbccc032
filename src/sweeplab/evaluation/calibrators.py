"""Post-hoc calibration: a small map from logits to logits, fitted on validation data.

Each calibrator minimises the NLL of the validation labels with L-BFGS in
float64, starting from the identity map, i.e. from the uncalibrated model.
Fitting on the test split raises: test numbers must not have touched any fit.
For an ensemble, pass the log of the mean member probability as the logits, or
scale each member first (:class:`MemberwiseTemperatureScaling`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor


class _Calibrator(ABC):
    """Shared fitting loop; subclasses define the parameters and the map."""

    def __init__(self, max_iter: int = 100) -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        self.max_iter = max_iter
        self.params: dict[str, Tensor] | None = None
        self.fit_split: str | None = None

    @abstractmethod
    def _init_params(self, num_classes: int) -> dict[str, Tensor]:
        """Parameters of the identity map for ``num_classes`` classes."""

    @abstractmethod
    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The calibration map."""

    def _penalty(self, params: dict[str, Tensor]) -> Tensor | float:
        return 0.0

    def fit(self, logits: Tensor, labels: Tensor, split: str) -> Self:
        """Fit on ``logits [N, C]`` and ``labels [N]`` of ``split`` (which must not be test)."""
        if split.strip().lower() == "test":
            raise ValueError(
                f"{type(self).__name__}: fitting on the test split is not allowed "
                "(test results must not depend on test labels): fit calibrators on val"
            )
        if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if labels.numel() == 0:
            raise ValueError(f"cannot fit {type(self).__name__} on an empty {split} set")
        # Outside inference mode so that tensors made under it can enter autograd.
        with torch.inference_mode(False), torch.enable_grad():
            z = logits.detach().to(torch.float64).clone()
            if not torch.isfinite(z).all():
                raise ValueError(f"{split} logits contain NaN or infinite values")
            y = labels.detach().long().clone()
            params = {name: p.requires_grad_() for name, p in self._init_params(z.shape[1]).items()}
            optimizer = torch.optim.LBFGS(
                list(params.values()),
                lr=1.0,
                max_iter=self.max_iter,
                line_search_fn="strong_wolfe",
            )

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(self._apply(z, params), y) + self._penalty(params)
                loss.backward()
                return loss

            optimizer.step(closure)
        self.params = {name: p.detach() for name, p in params.items()}
        self.fit_split = split
        return self

    def transform(self, logits: Tensor) -> Tensor:
        """Calibrated logits, in the dtype of ``logits``."""
        if self.params is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit on val first")
        with torch.no_grad():
            return self._apply(logits.to(torch.float64), self.params).to(logits.dtype)


class TemperatureScaling(_Calibrator):
    """``z / T`` with one temperature (Guo et al. 2017); never changes the predicted class.

    ``T`` is fitted as ``log T`` so it stays positive.
    """

    def _init_params(self, num_classes: int) -> dict[str, Tensor]:
        return {"log_temperature": torch.zeros((), dtype=torch.float64)}

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits * torch.exp(-params["log_temperature"])

    @property
    def temperature(self) -> float:
        if self.params is None:
            raise RuntimeError("TemperatureScaling is not fitted: call fit on val first")
        return self.params["log_temperature"].exp().item()


class VectorScaling(_Calibrator):
    """``w ⊙ z + b`` with a scale and a bias per class."""

    def _init_params(self, num_classes: int) -> dict[str, Tensor]:
        return {
            "weight": torch.ones(num_classes, dtype=torch.float64),
            "bias": torch.zeros(num_classes, dtype=torch.float64),
        }

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits * params["weight"] + params["bias"]


class MatrixScaling(_Calibrator):
    """``W z + b`` with a full matrix, starting from ``W = I``, ``b = 0``.

    With C² parameters it overfits small validation sets; ``l2 > 0`` adds
    ``l2 · (‖offdiag W‖² + ‖b‖²)`` to the mean NLL (Kull et al. 2019's
    off-diagonal and intercept regularisation), shrinking towards vector scaling.
    """

    def __init__(self, max_iter: int = 100, l2: float = 0.0) -> None:
        super().__init__(max_iter)
        if l2 < 0:
            raise ValueError(f"l2 must be ≥ 0, got {l2}")
        self.l2 = l2

    def _init_params(self, num_classes: int) -> dict[str, Tensor]:
        return {
            "weight": torch.eye(num_classes, dtype=torch.float64),
            "bias": torch.zeros(num_classes, dtype=torch.float64),
        }

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits @ params["weight"].T + params["bias"]

    def _penalty(self, params: dict[str, Tensor]) -> Tensor | float:
        if not self.l2:
            return 0.0
        weight = params["weight"]
        off_diagonal = weight - torch.diag(torch.diagonal(weight))
        return self.l2 * (off_diagonal.pow(2).sum() + params["bias"].pow(2).sum())


class MemberwiseTemperatureScaling:
    """One temperature per ensemble member, fitted on that member's logits, then ``p̄``.

    ``log (1/M) Σ_m softmax(z_m / T_m)``: each member is calibrated before the
    probabilities are averaged, the alternative to one temperature on the pooled
    ensemble (``log p̄ / T``), which ensembles of already-calibrated or
    under-confident members (mixup, Wen et al. 2021) may need less or more.
    """

    def __init__(self, max_iter: int = 100) -> None:
        self.max_iter = max_iter
        self.members: list[TemperatureScaling] = []

    def fit(self, member_logits: Tensor, labels: Tensor, split: str) -> Self:
        """Fit each member's temperature on ``member_logits [N, M, C]`` of ``split`` (not test)."""
        if member_logits.ndim != 3:
            raise ValueError(f"expected member logits [N, M, C], got {tuple(member_logits.shape)}")
        self.members = [
            TemperatureScaling(self.max_iter).fit(member_logits[:, m], labels, split=split)
            for m in range(member_logits.shape[1])
        ]
        return self

    @property
    def temperatures(self) -> list[float]:
        if not self.members:
            raise RuntimeError("MemberwiseTemperatureScaling is not fitted: call fit on val first")
        return [member.temperature for member in self.members]

    def transform(self, member_logits: Tensor) -> Tensor:
        """Log of the mean calibrated member probability, ``[N, C]`` float64."""
        temperatures = torch.tensor(self.temperatures, dtype=torch.float64)
        if member_logits.ndim != 3 or member_logits.shape[1] != len(temperatures):
            raise ValueError(
                f"fitted on M={len(temperatures)} members, got member logits "
                f"{tuple(member_logits.shape)}"
            )
        scaled = member_logits.detach().double() / temperatures[None, :, None]
        log_probs = torch.log_softmax(scaled, dim=-1)
        return torch.logsumexp(log_probs, dim=1) - math.log(len(temperatures))


CALIBRATORS: dict[str, type[_Calibrator]] = {
    "ts": TemperatureScaling,
    "vs": VectorScaling,
    "ms": MatrixScaling,
}
