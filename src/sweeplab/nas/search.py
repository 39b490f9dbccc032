"""Search a trained supernet for the best subnet under a FLOPs and/or parameter budget.

Every candidate is extracted from the supernet, its BatchNorm statistics handled by
the run's policy (:mod:`sweeplab.models.subnet_scoring`), and scored on **val**: the
search never reads test data, so the test metrics of the subnet it picks stay an
honest estimate. Two strategies: random search, and regularised evolution (Real et
al. 2019: tournament selection of a parent from a population, one mutation, the
oldest member retires). Both draw from a seeded generator, so a search repeats.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sweeplab.models.search_space import Arch, SearchSpace, encode
from sweeplab.models.subnet_scoring import accuracy, scoring_subnet
from sweeplab.models.supernet import Supernet
from sweeplab.nas.flops import Cost

METHODS = ("evolution", "random")


@dataclass(frozen=True)
class Budget:
    """Upper limits on a subnet's cost; ``None`` is no limit."""

    max_mflops: float | None = None
    max_params: int | None = None

    def admits(self, cost: Cost) -> bool:
        return (self.max_mflops is None or cost.mflops <= self.max_mflops) and (
            self.max_params is None or cost.params <= self.max_params
        )

    def describe(self) -> str:
        parts = []
        if self.max_mflops is not None:
            parts.append(f"≤ {self.max_mflops:g} MFLOPs")
        if self.max_params is not None:
            parts.append(f"≤ {self.max_params:,} parameters")
        return ", ".join(parts) or "no budget"

    def key(self) -> str:
        """The budget's part of a metric name: ``mflops_5``, ``params_50000``, ``mflops_5_params_…``."""
        parts = []
        if self.max_mflops is not None:
            parts.append(f"mflops_{self.max_mflops:g}")
        if self.max_params is not None:
            parts.append(f"params_{self.max_params}")
        return "_".join(parts) or "unbounded"


@dataclass(frozen=True)
class Candidate:
    """A scored architecture."""

    arch: str
    val_acc: float
    flops: int
    params: int

    @property
    def mflops(self) -> float:
        return self.flops / 1e6


class SubnetScorer:
    """Val accuracy of subnets with the supernet's weights, each architecture scored once."""

    def __init__(
        self,
        supernet: Supernet,
        val: tuple[Tensor, Tensor],
        preprocess: Callable[[Tensor], Tensor],
        policy: str,
        calibration: Tensor | None,
        batch_size: int = 512,
    ) -> None:
        self.supernet = supernet
        self.images, self.labels = val
        self.preprocess = preprocess
        self.policy = policy
        self.calibration = calibration
        self.batch_size = batch_size
        self.scores: dict[str, float] = {}

    def __call__(self, arch: Arch) -> float:
        key = encode(arch)
        if key not in self.scores:
            model = scoring_subnet(
                self.supernet, arch, self.policy, self.calibration, self.batch_size
            )
            self.scores[key] = accuracy(
                model, self.images, self.labels, self.policy, self.batch_size, self.preprocess
            )
        return self.scores[key]


def _pick(options, generator: torch.Generator):
    return options[int(torch.randint(len(options), (), generator=generator))]


def mutate(space: SearchSpace, arch: Arch, generator: torch.Generator) -> Arch:
    """``arch`` with one choice of one stage changed to another value."""
    stage = int(torch.randint(space.num_stages, (), generator=generator))
    old = arch[stage]
    dimensions = [
        (name, values)
        for name, values in (
            ("depth", space.depths),
            ("width", space.width_mults),
            ("kernel", space.kernels),
        )
        if len(values) > 1
    ]
    if not dimensions:
        return arch
    name, values = _pick(dimensions, generator)
    current = getattr(old, name)
    value = _pick([v for v in values if v != current], generator)
    changed = replace(old, **{name: value})
    return (*arch[:stage], changed, *arch[stage + 1 :])


def sample_within(
    space: SearchSpace,
    cost: Callable[[Arch], Cost],
    budget: Budget,
    generator: torch.Generator,
    tries: int = 2000,
) -> Arch:
    """A uniformly drawn architecture within ``budget`` (by rejection)."""
    for _ in range(tries):
        arch = space.sample(generator)
        if budget.admits(cost(arch)):
            return arch
    smallest = cost(space.smallest())
    raise ValueError(
        f"no architecture within {budget.describe()} in {tries} draws; the smallest subnet has "
        f"{smallest.mflops:.3g} MFLOPs and {smallest.params:,} parameters: raise the budget"
    )


def _candidate(arch: Arch, score, cost) -> Candidate:
    spent = cost(arch)
    return Candidate(encode(arch), score(arch), spent.flops, spent.params)


def random_search(space, score, cost, budget, samples: int, generator) -> list[Candidate]:
    """``samples`` draws within the budget (repeats are scored once)."""
    return [
        _candidate(sample_within(space, cost, budget, generator), score, cost)
        for _ in range(samples)
    ]


def regularized_evolution(
    space,
    score,
    cost,
    budget,
    samples: int,
    generator,
    population: int = 16,
    tournament: int = 4,
) -> list[Candidate]:
    """Aging evolution: ``population`` random members, then a child per cycle until
    ``samples`` candidates; every candidate lies within the budget."""
    history: list[Candidate] = []
    members: deque[tuple[Arch, float]] = deque()
    for _ in range(min(population, samples)):
        arch = sample_within(space, cost, budget, generator)
        history.append(_candidate(arch, score, cost))
        members.append((arch, history[-1].val_acc))
    while len(history) < samples:
        drawn = torch.randperm(len(members), generator=generator)[:tournament].tolist()
        parent = max((members[i] for i in drawn), key=lambda m: m[1])[0]
        child = parent
        for _ in range(50):  # a child outside the budget is redrawn
            child = mutate(space, parent, generator)
            if budget.admits(cost(child)):
                break
        else:
            child = sample_within(space, cost, budget, generator)
        history.append(_candidate(child, score, cost))
        members.append((child, history[-1].val_acc))
        members.popleft()
    return history


def best_of(candidates: list[Candidate]) -> Candidate:
    """The most accurate candidate; among equals the cheapest, then the first found."""
    return min(candidates, key=lambda c: (-c.val_acc, c.flops))


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates no other one beats in both val accuracy and FLOPs, by FLOPs."""
    unique = {c.arch: c for c in candidates}.values()
    front, best = [], -1.0
    for candidate in sorted(unique, key=lambda c: (c.flops, -c.val_acc)):
        if candidate.val_acc > best:
            front.append(candidate)
            best = candidate.val_acc
    return front
