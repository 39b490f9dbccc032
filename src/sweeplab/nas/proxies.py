"""Training-free proxies: scores of a freshly initialised subnet that predict its rank.

Each takes the model at initialisation and one batch of training images (and labels)
and returns a number where higher means a better predicted subnet. They are the
proxies the weight-sharing and zero-cost NAS papers compare a supernet's ranking
with (Abdelfattah et al. 2021; Mellor et al. 2021):

- ``grad_norm``: the summed L2 norms of the loss gradient of every weight;
- ``snip``: ``Σ |∂L/∂θ ⊙ θ|`` (Lee et al. 2019);
- ``synflow``: ``Σ ∂R/∂θ ⊙ θ`` for ``R`` the summed output of the network with all
  weights made positive on an all-ones input, in float64 (Tanaka et al. 2020);
- ``naswot``: ``log |det K|`` of the Hamming-similarity kernel of the batch's binary
  ReLU codes (Mellor et al. 2021);
- ``jacob_cov``: ``−Σ log(λ + k) + 1/(λ + k)`` over the eigenvalues λ of the correlation
  matrix of the per-image input Jacobians, ``k = 1e-5`` (Mellor et al. 2020).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.dim() > 1]  # conv and linear weights


def grad_norm(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model = copy.deepcopy(model).train()
    F.cross_entropy(model(x), y).backward()
    return float(sum(float(p.grad.norm()) for p in _weights(model) if p.grad is not None))


def snip(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model = copy.deepcopy(model).train()
    F.cross_entropy(model(x), y).backward()
    return float(
        sum(float((p.grad * p.detach()).abs().sum()) for p in _weights(model) if p.grad is not None)
    )


def synflow(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    model(ones).sum().backward()
    return float(
        sum(float((p.grad * p.detach()).sum()) for p in _weights(model) if p.grad is not None)
    )


def naswot(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model = copy.deepcopy(model).train()
    codes: list[Tensor] = []

    def record(_module, _inputs, output: Tensor) -> None:
        codes.append((output.detach().flatten(1) > 0).double())

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    c = torch.cat(codes, dim=1)
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    return float(torch.linalg.slogdet(kernel).logabsdet)


def jacob_cov(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model = copy.deepcopy(model).train()
    x = x.clone().requires_grad_(True)
    model(x).sum().backward()
    jacobians = x.grad.flatten(1).double()
    corr = torch.corrcoef(jacobians)
    eigenvalues = torch.linalg.eigvalsh(torch.nan_to_num(corr))
    k = 1e-5
    return float(
        -(torch.log(eigenvalues.clamp_min(0) + k) + 1.0 / (eigenvalues.clamp_min(0) + k)).sum()
    )


PROXIES = {
    "synflow": synflow,
    "grad_norm": grad_norm,
    "snip": snip,
    "naswot": naswot,
    "jacob_cov": jacob_cov,
}
