"""Weight merging as pure functions on state dicts: soups and task-vector merges.

Every function takes state dicts (``{name: tensor}``) of models of one architecture
and returns a new state dict; nothing here knows about runs, data or Lightning, so
each method is checked against a hand computation on tiny tensors. Entries that are
not floating point (BatchNorm's ``num_batches_tracked``) cannot be averaged and are
taken from the first model (from the base, for task-vector methods).

- uniform / greedy soup: Wortsman et al. (2022), "Model soups".
- task arithmetic: Ilharco et al. (2023), τ_t = θ_t − θ_base, θ = θ_base + λ Σ_t τ_t.
- TIES: Yadav et al. (2023): trim each τ_t to its top-k % magnitudes, elect per entry
  the sign of the summed trimmed values, average only the entries that agree with it.
- DARE: Yu et al. (2024): drop each entry of τ_t with probability p, rescale the rest
  by 1 / (1 − p), then merge the sparse task vectors by task arithmetic or TIES.
- Fisher: Matena & Raffel (2022): θ = Σ_t (F_t + ε) θ_t / Σ_t (F_t + ε) per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

State = Mapping[str, Tensor]


def mergeable(value: Tensor) -> bool:
    """Whether an entry is averaged (floating point) or copied (counters, masks)."""
    return torch.is_tensor(value) and torch.is_floating_point(value)


def first_difference(a: State, b: State) -> str | None:
    """The first entry in which two state dicts differ in name, shape or dtype, or None."""
    for key in sorted(set(a) ^ set(b)):
        side = "only the first" if key in a else "only the second"
        return f"{key} ({side} has it)"
    for key in a:
        if a[key].shape != b[key].shape:
            return f"{key} (shape {list(a[key].shape)} vs {list(b[key].shape)})"
        if a[key].dtype != b[key].dtype:
            return f"{key} (dtype {a[key].dtype} vs {b[key].dtype})"
    return None


def check_compatible(states: Sequence[State], names: Sequence[str]) -> None:
    """Raise a one-line ``ValueError`` naming two models whose entries differ."""
    if not states:
        raise ValueError("nothing to merge: no state dicts given")
    for state, name in zip(states[1:], names[1:], strict=True):
        difference = first_difference(states[0], state)
        if difference is not None:
            raise ValueError(
                f"{names[0]} and {name} have different architectures and cannot be merged: "
                f"first difference at {difference}"
            )


def weighted_average(states: Sequence[State], weights: Sequence[float]) -> dict[str, Tensor]:
    """Σ_t w_t θ_t / Σ_t w_t for float entries; other entries from the first model."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to > 0, got {list(weights)}")
    merged = {}
    for key, first in states[0].items():
        if not mergeable(first):
            merged[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for state, weight in zip(states, weights, strict=True):
            acc += float(weight) * state[key].double()
        merged[key] = (acc / total).to(first.dtype)
    return merged


def uniform_soup(states: Sequence[State]) -> dict[str, Tensor]:
    """The mean of the models' weights (a soup of one model is that model)."""
    return weighted_average(states, [1.0] * len(states))


def greedy_soup(
    states: Sequence[State], score: Callable[[State], float]
) -> tuple[dict[str, Tensor], list[int]]:
    """Wortsman et al.'s greedy soup of ``states``, given best first.

    Each next ingredient is added when the uniform soup with it scores at least as
    well as the soup without it. ``score`` must read held-out (val) data only.
    Returns the soup and the indices of the ingredients kept.
    """
    kept = [0]
    soup = uniform_soup([states[0]])
    best = score(soup)
    for index in range(1, len(states)):
        candidate = uniform_soup([states[i] for i in [*kept, index]])
        value = score(candidate)
        if value >= best:
            kept.append(index)
            soup, best = candidate, value
    return soup, kept


def best_single(states: Sequence[State], scores: Sequence[float]) -> tuple[dict[str, Tensor], int]:
    """The ingredient with the highest score, taken alone (a soup of one).

    The baseline a soup is judged against: ``scores`` must be held-out (val) values,
    never test. Of equal scores the first wins. Returns a copy of that state dict and
    its index.
    """
    if len(states) != len(scores) or not states:
        raise ValueError(f"need one score per state dict, got {len(scores)} for {len(states)}")
    index = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return uniform_soup([states[index]]), index


def task_vector(state: State, base: State) -> dict[str, Tensor]:
    """τ = θ − θ_base for float entries (others are not part of a task vector)."""
    return {key: state[key] - base[key] for key in base if mergeable(base[key])}


def add_task_vector(base: State, tau: Mapping[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """θ_base + λ τ; entries without a task vector are the base's."""
    return {
        key: (value + scaling * tau[key]).to(value.dtype) if key in tau else value.clone()
        for key, value in base.items()
    }


def task_arithmetic(states: Sequence[State], base: State, scaling: float) -> dict[str, Tensor]:
    """θ_base + λ Σ_t (θ_t − θ_base) (Ilharco et al. 2023); λ = 0 is the base."""
    taus = [task_vector(state, base) for state in states]
    summed = {key: sum(tau[key] for tau in taus) for key in taus[0]}
    return add_task_vector(base, summed, scaling)


def _flat(tau: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([value.reshape(-1) for value in tau.values()]) if tau else torch.zeros(0)


def _unflat(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    out, start = {}, 0
    for key, value in like.items():
        out[key] = flat[start : start + value.numel()].view_as(value).to(value.dtype)
        start += value.numel()
    return out


def ties_trim(tau: Mapping[str, Tensor], keep: float) -> dict[str, Tensor]:
    """Keep the top ``keep`` fraction of |τ| over the whole task vector, zero the rest.

    Entries with |τ| ≥ the k-th largest magnitude are kept, k = ⌊keep · d⌋ of the d
    entries (ties at the threshold are all kept). The authors' code thresholds at the
    (d − k)-th smallest magnitude, which keeps one entry more.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    flat = _flat(tau)
    d = flat.numel()
    k = int(d * keep)
    if k >= d or d == 0:
        return {key: value.clone() for key, value in tau.items()}
    if k == 0:
        return {key: torch.zeros_like(value) for key, value in tau.items()}
    threshold = flat.abs().kthvalue(d - k + 1).values
    return _unflat(flat * (flat.abs() >= threshold), tau)


def ties_elect(trimmed: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per entry, the sign (±1) of the summed trimmed task vectors.

    An entry whose sum is exactly 0 takes the sign of the total over all entries
    (the authors' "majority sign"), so every entry has a sign of +1 or −1.
    """
    summed = _flat({key: sum(t[key] for t in trimmed) for key in trimmed[0]})
    signs = torch.sign(summed)
    majority = 1.0 if summed.sum() >= 0 else -1.0
    signs[signs == 0] = majority
    return _unflat(signs, trimmed[0])


def ties_disjoint_mean(
    trimmed: Sequence[Mapping[str, Tensor]], signs: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Per entry, the mean of the task vectors' non-zero values of the elected sign
    (zero where none agrees)."""
    merged = {}
    for key, sign in signs.items():
        stacked = torch.stack([t[key] for t in trimmed])
        agrees = torch.where(sign > 0, stacked > 0, stacked < 0)
        selected = stacked * agrees
        count = agrees.sum(dim=0).clamp(min=1)
        merged[key] = selected.sum(dim=0) / count
    return merged


def ties_vector(taus: Sequence[Mapping[str, Tensor]], keep: float) -> dict[str, Tensor]:
    """TIES's merged task vector: trim, elect, disjoint mean."""
    trimmed = [ties_trim(tau, keep) for tau in taus]
    return ties_disjoint_mean(trimmed, ties_elect(trimmed))


def ties(states: Sequence[State], base: State, keep: float, scaling: float) -> dict[str, Tensor]:
    """θ_base + λ · TIES(τ_1 … τ_T) (Yadav et al. 2023; their default λ = 1, keep = 0.2)."""
    taus = [task_vector(state, base) for state in states]
    return add_task_vector(base, ties_vector(taus, keep), scaling)


def dare_drop(
    tau: Mapping[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Each entry kept with probability 1 − p and rescaled by 1 / (1 − p): E[out] = τ."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    out = {}
    for key, value in tau.items():
        keep = torch.rand(value.shape, generator=generator) >= p
        out[key] = value * keep.to(value.dtype) / (1.0 - p)
    return out


def dare(
    states: Sequence[State],
    base: State,
    p: float,
    then: str,
    scaling: float,
    keep: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """DARE (Yu et al. 2024): drop and rescale each task vector, then merge by ``then``
    (``task_arithmetic``: θ_base + λ Σ τ̃; ``ties``: θ_base + λ TIES(τ̃) with ``keep``)."""
    taus = [dare_drop(task_vector(state, base), p, generator) for state in states]
    if then == "task_arithmetic":
        merged = {key: sum(tau[key] for tau in taus) for key in taus[0]}
    elif then == "ties":
        merged = ties_vector(taus, keep)
    else:
        raise ValueError(f"then must be task_arithmetic or ties, got {then!r}")
    return add_task_vector(base, merged, scaling)


def fisher_merge(
    states: Sequence[State], fishers: Sequence[Mapping[str, Tensor]], eps: float
) -> dict[str, Tensor]:
    """Σ_t (F_t + ε) θ_t / Σ_t (F_t + ε) per entry (Matena & Raffel 2022).

    Entries without a Fisher (buffers) are averaged uniformly; ε > 0 keeps entries
    no model's Fisher sees (all zero) at the uniform mean rather than 0 / 0.
    """
    merged = uniform_soup(states)
    for key in fishers[0]:
        weights = [fisher[key].double() + eps for fisher in fishers]
        numerator = sum(w * state[key].double() for w, state in zip(weights, states, strict=True))
        merged[key] = (numerator / sum(weights)).to(states[0][key].dtype)
    return merged
