"""Post-hoc calibration: a small map from logits to logits, fitted on validation data.

Every calibrator minimises the NLL of the validation labels in float64 and
lands on its optimum, not wherever an optimiser happens to stop: the single
temperature by a safeguarded Newton search on ``1/T`` (its NLL is convex there),
vector and matrix scaling by Newton's method on a strictly convex, regularised NLL.
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

# The temperatures a fit may return. On separable validation data the NLL keeps
# falling as T → 0, so without a bound the fit would have no answer.
TEMPERATURE_BOUNDS = (1e-2, 1e2)
# Strengths of the vector/matrix scaling penalty tried on val, and the folds used to choose.
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
L2_FOLDS = 3


def _checked_inputs(name: str, logits: Tensor, labels: Tensor, split: str) -> tuple[Tensor, Tensor]:
    """``logits`` as float64 and ``labels`` as long, or a ValueError saying what is wrong."""
    if split.strip().lower() == "test":
        raise ValueError(
            f"{name}: fitting on the test split is not allowed "
            "(test results must not depend on test labels): fit calibrators on val"
        )
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if labels.numel() == 0:
        raise ValueError(f"cannot fit {name} on an empty {split} set")
    z = logits.detach().to(torch.float64).clone()
    if not torch.isfinite(z).all():
        raise ValueError(f"{split} logits contain NaN or infinite values")
    return z, labels.detach().long().clone()


def optimal_inverse_temperature(z: Tensor, y: Tensor, max_iter: int = 100) -> float:
    """The ``β = 1/T`` in :data:`TEMPERATURE_BOUNDS` that minimises ``NLL(β z, y)``.

    The NLL is convex in ``β`` (its second derivative is the mean variance of the
    logits under the scaled softmax), so the root of its derivative is the
    optimum. Newton steps, kept inside a shrinking bracket (log-midpoint when a
    step leaves it), reach it to ~1e-12 relative; the derivative, unlike the NLL
    itself, still resolves the optimum on flat, low-NLL validation sets.
    """
    true_logit = z.gather(1, y[:, None]).squeeze(1)

    def slope_and_curvature(beta: float) -> tuple[float, float]:
        p = torch.softmax(beta * z, dim=1)
        mean = (p * z).sum(1)
        variance = (p * (z - mean[:, None]).pow(2)).sum(1)
        return (mean - true_logit).mean().item(), variance.mean().item()

    lo, hi = 1 / TEMPERATURE_BOUNDS[1], 1 / TEMPERATURE_BOUNDS[0]
    if slope_and_curvature(lo)[0] >= 0:
        return lo  # even the highest temperature is not high enough
    if slope_and_curvature(hi)[0] <= 0:
        return hi  # separable: the NLL falls all the way to the lowest temperature
    beta = min(max(1.0, lo), hi)
    for _ in range(max_iter):
        slope, curvature = slope_and_curvature(beta)
        if slope == 0:
            return beta
        if slope < 0:
            lo = beta
        else:
            hi = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        following = step if lo < step < hi else math.sqrt(lo * hi)
        if abs(following - beta) <= 1e-13 * beta or hi - lo <= 1e-13 * beta:
            return following
        beta = following
    return beta


class _Calibrator(ABC):
    """Input checks and ``transform``; subclasses define the parameters, the map and the fit."""

    def __init__(self, max_iter: int = 100) -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        self.max_iter = max_iter
        self.params: dict[str, Tensor] | None = None
        self.fit_split: str | None = None

    @abstractmethod
    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The calibration map."""

    @abstractmethod
    def _fit(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The fitted parameters for float64 logits ``z [N, C]`` and labels ``y [N]``."""

    def fit(self, logits: Tensor, labels: Tensor, split: str) -> Self:
        """Fit on ``logits [N, C]`` and ``labels [N]`` of ``split`` (which must not be test)."""
        z, y = _checked_inputs(type(self).__name__, logits, labels, split)
        # Outside inference mode so that tensors made under it can enter autograd.
        with torch.inference_mode(False), torch.enable_grad():
            params = self._fit(z, y)
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

    ``T`` is the exact NLL optimum within :data:`TEMPERATURE_BOUNDS`
    (see :func:`optimal_inverse_temperature`), stored as ``log T``.
    """

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits * torch.exp(-params["log_temperature"])

    def _fit(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        beta = optimal_inverse_temperature(z, y, self.max_iter)
        return {"log_temperature": torch.tensor(-math.log(beta), dtype=torch.float64)}

    @property
    def temperature(self) -> float:
        if self.params is None:
            raise RuntimeError("TemperatureScaling is not fitted: call fit on val first")
        return self.params["log_temperature"].exp().item()


class _RegularisedScaling(_Calibrator):
    """An affine map of the logits fitted on the NLL plus an L2 penalty of strength ``l2``.

    On separable validation data the plain NLL has no finite minimiser (scaling
    the logits up lowers it forever), so the fit would depend on where the
    optimiser stops. The penalty (Kull et al. 2019's off-diagonal and intercept
    regularisation, ODIR) pulls the off-diagonal entries and the intercept to 0,
    and the diagonal to ``1/T`` of the exact temperature fit, each as a mean
    square; the objective is then strictly convex with one finite minimiser, and
    strong penalties shrink the map towards temperature scaling. ``l2=None``
    chooses the strength from :data:`L2_GRID` by the held-out NLL of a
    :data:`L2_FOLDS`-fold split of val; ``l2=0`` is the unregularised
    maximum-likelihood fit. Newton's method with the exact Hessian finds the
    minimiser to ~1e-10 when there are at most ``newton_max_params`` parameters,
    L-BFGS with tight tolerances beyond that (matrix scaling of many classes).
    """

    newton_max_params = 600

    def __init__(self, max_iter: int = 100, l2: float | None = None) -> None:
        super().__init__(max_iter)
        if l2 is not None and not l2 >= 0:
            raise ValueError(f"l2 must be ≥ 0 or None (chosen on val), got {l2}")
        self.l2 = l2
        self.chosen_l2: float | None = None

    @abstractmethod
    def _features(self, z: Tensor) -> Tensor:
        """``F [N, C, d]`` such that calibrated logit ``c`` of sample ``n`` is ``F[n, c] · θ[c]``
        for the parameters laid out as ``θ [C, d]``."""

    @abstractmethod
    def _unpack(self, theta: Tensor) -> dict[str, Tensor]:
        """``θ`` as named parameters (``weight``, ``bias``)."""

    @abstractmethod
    def _penalty_weights(self, num_classes: int) -> tuple[Tensor, Tensor]:
        """Per-entry weights of the penalty and the mask of diagonal entries, both ``[C, d]``."""

    def _identity(self, num_classes: int) -> Tensor:
        """``θ`` of the uncalibrated map: where the optimiser starts."""
        return self._penalty_weights(num_classes)[1].to(torch.float64)

    def _fit(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        l2 = self.l2 if self.l2 is not None else self._choose_l2(z, y)
        self.chosen_l2 = l2
        return self._unpack(self._minimise(z, y, l2, self._identity(z.shape[1])))

    def _minimise(self, z: Tensor, y: Tensor, l2: float, start: Tensor) -> Tensor:
        weights, diagonal = self._penalty_weights(z.shape[1])
        beta = optimal_inverse_temperature(z, y) if l2 > 0 else 0.0
        target = diagonal.to(torch.float64) * beta
        if start.numel() <= self.newton_max_params:
            return self._newton(z, y, l2 * weights, target, start)
        return self._lbfgs(z, y, l2 * weights, target, start)

    def _newton(self, z: Tensor, y: Tensor, weights: Tensor, target: Tensor, start: Tensor):
        features = self._features(z)
        n, c, d = features.shape
        onehot = F.one_hot(y, c).to(torch.float64)
        rows = torch.arange(c)

        def objective(theta: Tensor) -> tuple[Tensor, Tensor]:
            log_p = torch.log_softmax(torch.einsum("ncd,cd->nc", features, theta), dim=1)
            nll = -(log_p * onehot).sum() / n
            return nll + (weights * (theta - target).pow(2)).sum(), log_p

        theta = start.clone()
        for _ in range(self.max_iter):
            value, log_p = objective(theta)
            p = log_p.exp()
            gradient = torch.einsum("nc,ncd->cd", p - onehot, features) / n
            gradient = gradient + 2 * weights * (theta - target)
            weighted = (p[..., None] * features).reshape(n, c * d)
            hessian = -(weighted.T @ weighted) / n
            blocks = torch.einsum("nc,ncd,nce->cde", p, features, features) / n
            hessian.view(c, d, c, d)[rows, :, rows, :] += blocks
            hessian += torch.diag(2 * weights.reshape(-1))
            step = -_solve_psd(hessian, gradient.reshape(-1)).reshape(c, d)
            decrement = -(gradient * step).sum().item()
            if not decrement > 1e-24:
                break
            size = 1.0
            while decrement > 1e-12 and size > 1e-10:  # near the optimum the full step is right
                if (
                    objective(theta + size * step)[0].item()
                    <= value.item() - 1e-4 * size * decrement
                ):
                    break
                size /= 2
            theta = theta + size * step
            if size * step.abs().max().item() <= 1e-11 * max(1.0, theta.abs().max().item()):
                break
        return theta

    def _lbfgs(self, z: Tensor, y: Tensor, weights: Tensor, target: Tensor, start: Tensor):
        theta = start.clone().requires_grad_()
        optimizer = torch.optim.LBFGS(
            [theta],
            lr=1.0,
            max_iter=max(self.max_iter, 500),
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(self._apply(z, self._unpack(theta)), y)
            loss = loss + (weights * (theta - target).pow(2)).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return theta.detach()

    def _choose_l2(self, z: Tensor, y: Tensor) -> float:
        """The grid strength with the lowest NLL on held-out folds of val (ties: stronger)."""
        n, c = z.shape
        if n < 2 * L2_FOLDS:
            return L2_GRID[len(L2_GRID) // 2]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        folds = [order[k::L2_FOLDS] for k in range(L2_FOLDS)]
        best, best_nll = L2_GRID[-1], math.inf
        for l2 in sorted(L2_GRID, reverse=True):
            held_out_nll = 0.0
            for k, held_out in enumerate(folds):
                kept = torch.cat([fold for j, fold in enumerate(folds) if j != k])
                theta = self._minimise(z[kept], y[kept], l2, self._identity(c))
                logits = self._apply(z[held_out], self._unpack(theta))
                held_out_nll += F.cross_entropy(logits, y[held_out], reduction="sum").item()
            if held_out_nll < best_nll:
                best, best_nll = l2, held_out_nll
        return best


def _solve_psd(matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix⁻¹ vector`` for a positive definite ``matrix``; the minimum-norm solution when
    it is only semi-definite (unregularised scaling: adding a constant to every logit is free)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if info.item() == 0:
        return torch.cholesky_solve(vector[:, None], factor).squeeze(1)
    return torch.linalg.pinv(matrix, hermitian=True) @ vector


class VectorScaling(_RegularisedScaling):
    """``w ⊙ z + b`` with a scale and a bias per class; ``w`` is pulled to ``1/T`` and ``b``
    to 0 (see :class:`_RegularisedScaling`)."""

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits * params["weight"] + params["bias"]

    def _features(self, z: Tensor) -> Tensor:
        return torch.stack([z, torch.ones_like(z)], dim=2)

    def _unpack(self, theta: Tensor) -> dict[str, Tensor]:
        return {"weight": theta[:, 0], "bias": theta[:, 1]}

    def _penalty_weights(self, num_classes: int) -> tuple[Tensor, Tensor]:
        weights = torch.full((num_classes, 2), 1 / num_classes, dtype=torch.float64)
        diagonal = torch.zeros(num_classes, 2, dtype=torch.bool)
        diagonal[:, 0] = True
        return weights, diagonal


class MatrixScaling(_RegularisedScaling):
    """``W z + b`` with a full matrix, starting from ``W = I``, ``b = 0``.

    With C² parameters it overfits small validation sets; the penalty (see
    :class:`_RegularisedScaling`) pulls the off-diagonal of ``W`` and ``b`` to 0
    and the diagonal of ``W`` to ``1/T``.
    """

    def _apply(self, logits: Tensor, params: dict[str, Tensor]) -> Tensor:
        return logits @ params["weight"].T + params["bias"]

    def _features(self, z: Tensor) -> Tensor:
        inputs = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        return inputs[:, None, :].expand(-1, z.shape[1], -1)

    def _unpack(self, theta: Tensor) -> dict[str, Tensor]:
        return {"weight": theta[:, :-1], "bias": theta[:, -1]}

    def _penalty_weights(self, num_classes: int) -> tuple[Tensor, Tensor]:
        c = num_classes
        diagonal = torch.zeros(c, c + 1, dtype=torch.bool)
        diagonal[:, :c] = torch.eye(c, dtype=torch.bool)
        weights = torch.full((c, c + 1), 1 / max(c * (c - 1), 1), dtype=torch.float64)
        weights[diagonal] = 1 / c
        weights[:, c] = 1 / c
        return weights, diagonal


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
