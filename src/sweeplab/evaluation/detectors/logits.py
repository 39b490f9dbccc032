"""Detectors that read only the logits: MSP, MaxLogit, Energy, Entropy, ODIN, mutual information.

On ensembles, MSP, Entropy and ODIN use the mean member probability (the
project's ensemble prediction, :func:`ensemble_log_probs`), ODIN also when it
differentiates through the model; so Entropy on an ensemble is the predictive
entropy ``H(p̄)``. MaxLogit and Energy are defined on logits, which the mean
probability does not have, so they use the mean member logits. For M = 1 every
definition is the single model's. Mutual information, the members' disagreement,
exists only for ensembles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from sweeplab.evaluation.cache import EvalOutputs
from sweeplab.evaluation.detectors.base import (
    Detector,
    energy,
    mean_logits,
    number_in,
    positive_number,
)
from sweeplab.metrics.classification import ensemble_log_probs
from sweeplab.metrics.ensemble import mutual_information_per_sample


class MSPDetector(Detector):
    """Maximum softmax probability (Hendrycks & Gimpel, 2017): ``-max_c p(c|x)``.

    For M > 1, ``p`` is the mean member probability.
    """

    name = "msp"

    def _score(self, outputs: EvalOutputs) -> Tensor:
        return -ensemble_log_probs(outputs.member_logits).max(dim=1).values.exp()


class MaxLogitDetector(Detector):
    """Maximum logit (Hendrycks et al., 2022): ``-max_c z_c``; unaffected by softmax saturation.

    For M > 1, ``z`` is the mean of the member logits.
    """

    name = "maxlogit"

    def _score(self, outputs: EvalOutputs) -> Tensor:
        return -mean_logits(outputs).max(dim=1).values


class EnergyDetector(Detector):
    """Free energy (Liu et al., 2020): ``-T·logsumexp(z/T)``, T = 1 as in the paper.

    For M > 1, ``z`` is the mean of the member logits.
    """

    name = "energy"
    defaults: ClassVar[dict[str, Any]] = {"temperature": 1.0}

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        return {"temperature": positive_number("energy.temperature", hp["temperature"])}

    def _score(self, outputs: EvalOutputs) -> Tensor:
        return energy(mean_logits(outputs), self.hyperparameters["temperature"])


class EntropyDetector(Detector):
    """Predictive entropy ``-Σ p log p`` (nats); for M > 1 of the mean member probability.

    On an ensemble this is the total uncertainty ``H(p̄)``, which is the expected
    member entropy plus the mutual information (:class:`MutualInformationDetector`).
    """

    name = "entropy"

    def _score(self, outputs: EvalOutputs) -> Tensor:
        log_probs = ensemble_log_probs(outputs.member_logits)
        probs = log_probs.exp()
        return -torch.where(probs > 0, probs * log_probs, 0.0).sum(dim=1)


class MutualInformationDetector(Detector):
    """Mutual information ``H(p̄) − (1/M) Σ_m H(p_m)`` (nats), for ensembles only.

    The part of the predictive entropy that comes from the members disagreeing
    (epistemic uncertainty, Depeweg et al. 2018; used for OOD detection by
    Lakshminarayanan et al. 2017 and Malinin & Gales 2018): members trained apart
    tend to agree in distribution and disagree off it. Zero for identical members,
    so a single model has no such score.
    """

    name = "mutual_info"
    ensemble_only = True

    def _score(self, outputs: EvalOutputs) -> Tensor:
        return mutual_information_per_sample(outputs.member_logits)


def odin_log_probs(logits: Tensor, temperature: float) -> Tensor:
    """Log mean probability of temperature-scaled logits ``[B, C]`` or members ``[B, M, C]``."""
    members = logits if logits.ndim == 3 else logits.unsqueeze(1)
    return ensemble_log_probs(members / temperature)


class OdinDetector(Detector):
    """ODIN (Liang et al., 2018): temperature scaling plus a small input perturbation.

    The perturbation needs gradients through the model, so the full method runs in
    :meth:`score_inputs`; :meth:`score` works from cached logits and is therefore
    the ε = 0 variant. Defaults are the paper's T = 1000 and ε = 0.0014; ε is in
    units of the model input (after ``preprocess``, i.e. normalised pixels). For
    M > 1 the confidence is the mean member probability ``S(x; T) = mean_m
    softmax(z_m(x)/T)``, in the perturbation step too.
    """

    name = "odin"
    needs_model = True
    defaults: ClassVar[dict[str, Any]] = {"temperature": 1000.0, "epsilon": 0.0014}
    default_grid: ClassVar[dict[str, list]] = {
        "temperature": [1.0, 10.0, 100.0, 1000.0],
        "epsilon": [0.0, 0.0005, 0.0014, 0.004],
    }

    def _check(self, hp: dict[str, Any]) -> dict[str, Any]:
        return {
            "temperature": positive_number("odin.temperature", hp["temperature"]),
            "epsilon": number_in("odin.epsilon", hp["epsilon"], 0.0, 1.0, high_inclusive=True),
        }

    def score(self, outputs: EvalOutputs) -> Tensor:
        """``-max softmax(z/T)`` from cached logits: the ε = 0 variant (temperature only).

        Cached logits cannot be perturbed, so ``epsilon`` is ignored here; use
        :meth:`score_inputs` for full ODIN.
        """
        return super().score(outputs)

    def _score(self, outputs: EvalOutputs) -> Tensor:
        log_probs = odin_log_probs(outputs.member_logits, self.hyperparameters["temperature"])
        return -log_probs.max(dim=1).values.exp()

    def score_inputs(
        self,
        logits_fn: Callable[[Tensor], Tensor],
        batches: Iterable[tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Full ODIN scores ``[N]`` (float64, higher = more OOD) over ``batches`` of ``(x, y)``.

        For each preprocessed input x, with S(x) = max softmax(f(x)/T) (mean over
        members when ``logits_fn`` returns ``[B, M, C]``), takes one step that raises
        the predicted class's log-probability, x̃ = x − ε·sign(−∇ₓ log S(x)), and
        scores ``-S(x̃)``. In-distribution inputs gain more confidence from the step
        than OOD inputs, which is what separates them. ``logits_fn`` should be the
        model in eval mode; labels are ignored.
        """
        return score_odin_grid(logits_fn, batches, preprocess, [self.hyperparameters], device)[0]

    @classmethod
    def score_inputs_grid(
        cls,
        member_logits_fn: Callable[[Tensor], Tensor],
        batches: Iterable[tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        settings: list[dict[str, Any]],
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Full ODIN scores per ``{temperature, epsilon}`` setting (:func:`score_odin_grid`)."""
        return score_odin_grid(member_logits_fn, batches, preprocess, settings, device)


def score_odin_grid(
    logits_fn: Callable[[Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    preprocess: Callable[[Tensor], Tensor],
    settings: list[dict[str, float]],
    device: torch.device | str = "cpu",
) -> list[Tensor]:
    """Full ODIN scores for several ``{temperature, epsilon}`` settings in one sweep.

    ``logits_fn`` returns logits ``[B, C]`` or member logits ``[B, M, C]``; the
    confidence, and the log-confidence the step climbs, is then the mean member
    probability (:func:`odin_log_probs`), never a softmax of mean logits. Per batch, the
    unperturbed logits serve every ε = 0 setting, the input gradient is taken once per
    temperature, and each ε > 0 costs one more forward pass, so choosing (T, ε) on a grid
    costs a few passes, not a few per grid point. The unperturbed logits come from the
    gradient's own forward pass when there is one, so a single ε > 0 setting (the paper's
    defaults) costs one gradient and one perturbed pass.
    """
    scores: list[list[Tensor]] = [[] for _ in settings]
    temperatures = sorted({float(s["temperature"]) for s in settings})
    needs_clean = any(float(s["epsilon"]) == 0 for s in settings)
    for x, _ in batches:
        inputs = preprocess(x.to(device, non_blocking=True)).detach()
        clean_logits = None
        gradients = {}
        for temperature in temperatures:
            if any(float(s["temperature"]) == temperature and s["epsilon"] > 0 for s in settings):
                leaf = inputs.clone().requires_grad_(True)
                with torch.enable_grad():
                    logits = logits_fn(leaf)
                    top = odin_log_probs(logits, temperature).max(dim=1).values
                    (gradients[temperature],) = torch.autograd.grad(top.sum(), leaf)
                if clean_logits is None:
                    clean_logits = logits.detach()
        if needs_clean and clean_logits is None:
            with torch.no_grad():
                clean_logits = logits_fn(inputs)
        for index, setting in enumerate(settings):
            temperature, epsilon = float(setting["temperature"]), float(setting["epsilon"])
            if epsilon > 0:
                with torch.no_grad():
                    perturbed = inputs - epsilon * torch.sign(-gradients[temperature])
                    logits = logits_fn(perturbed)
            else:
                logits = clean_logits
            log_probs = odin_log_probs(logits, temperature)
            scores[index].append(-log_probs.max(dim=1).values.exp().cpu())
    if not scores[0]:
        raise ValueError("odin: no batches to score")
    return [torch.cat(parts).double() for parts in scores]
