"""The search space of the weight-shared supernet, and the text form of its architectures.

An architecture picks, for every stage of the residual CNN family
(:mod:`sweeplab.models.supernet`), its depth (blocks), its width (a multiplier of the
stage's full channel count) and its kernel size. Its text form is one ``d<depth>w<width>
k<kernel>`` group per stage, joined by ``-``: ``d2w0.5k3-d1w1k5-d2w0.75k3`` is three
stages of 2, 1 and 2 blocks. That string is what ``backbone=subnet backbone.arch=…``
takes, what ``sweeplab nas search`` prints and what the run id of a subnet hashes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import torch

from sweeplab import checks

_STAGE = re.compile(r"d(\d+)w(\d+(?:\.\d+)?)k(\d+)")


@dataclass(frozen=True)
class StageChoice:
    """One stage of an architecture: ``depth`` blocks of ``width`` × the channels, ``kernel``."""

    depth: int
    width: float
    kernel: int

    def encode(self) -> str:
        return f"d{self.depth}w{self.width:g}k{self.kernel}"


Arch = tuple[StageChoice, ...]


def encode(arch: Arch) -> str:
    """The text form of ``arch``: ``d2w0.5k3-d1w1k5``."""
    return "-".join(stage.encode() for stage in arch)


def parse(text: str, key: str = "backbone.arch") -> Arch:
    """The architecture written as ``text`` (its form only; :meth:`SearchSpace.decode`
    also checks it against a space)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"{key} must be an architecture string like 'd2w1k3-d1w0.5k3', got {text!r}"
        )
    stages = []
    for part in text.strip().split("-"):
        match = _STAGE.fullmatch(part)
        if match is None:
            raise ValueError(
                f"{key}={text!r}: stage {part!r} is not of the form d<depth>w<width>k<kernel> "
                "(e.g. d2w0.5k3)"
            )
        stages.append(StageChoice(int(match[1]), float(match[2]), int(match[3])))
    return tuple(stages)


def arch_text(key: str, value) -> Arch:
    """:func:`parse` in the ``rule(key, value)`` form of :mod:`sweeplab.checks`."""
    return parse(value, key)


def depth_choices(key: str, value) -> tuple[int, ...]:
    """The block counts a stage may have: positive integers."""
    return _sorted_unique(key, value, checks.positive_int)


def width_choices(key: str, value) -> tuple[float, ...]:
    """The channel multipliers a stage may have, each in (0, 1]."""
    return _sorted_unique(key, value, _width_mult)


def kernel_choices(key: str, value) -> tuple[int, ...]:
    """The kernel sizes a stage may have: odd positive integers."""
    return _sorted_unique(key, value, _odd_kernel)


def _sorted_unique(key: str, values: Sequence, convert) -> tuple:
    items = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else None
    if not items:
        raise ValueError(f"{key} must be a non-empty list, got {values!r}")
    return tuple(sorted({convert(key, v) for v in items}))


def _odd_kernel(key: str, value) -> int:
    kernel = checks.positive_int(key, value)
    if kernel % 2 == 0:
        raise ValueError(f"{key} must hold odd kernel sizes (padding keeps the size), got {kernel}")
    return kernel


def _width_mult(key: str, value) -> float:
    mult = checks.positive(key, value)
    if mult > 1:
        raise ValueError(f"{key} must hold multipliers in (0, 1], got {mult}")
    return float(mult)


@dataclass(frozen=True)
class SearchSpace:
    """Stages of at most ``max(depths)`` residual blocks of ``widths[i]`` channels.

    Args:
        widths: the full channel count of each stage (its length is the stage count).
        depths: the block counts a stage may have.
        width_mults: the fractions of a stage's channels a subnet may use.
        kernels: the (odd) kernel sizes a stage's convolutions may have.
        stem_width: channels of the fixed 3×3 stem.
    """

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    width_mults: tuple[float, ...]
    kernels: tuple[int, ...]
    stem_width: int

    @classmethod
    def of(
        cls,
        widths: Sequence[int],
        depths: Sequence[int],
        width_mults: Sequence[float],
        kernels: Sequence[int],
        stem_width: int,
    ) -> SearchSpace:
        """A checked space; each bad option is named by its ``backbone.*`` key."""
        return cls(
            widths=tuple(checks.positive_int_list("backbone.widths", widths)),
            depths=depth_choices("backbone.depths", depths),
            width_mults=width_choices("backbone.width_mults", width_mults),
            kernels=kernel_choices("backbone.kernels", kernels),
            stem_width=checks.positive_int("backbone.stem_width", stem_width),
        )

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def channels(self, stage: int, width: float) -> int:
        """Channels of ``stage`` at multiplier ``width``: the leading ones of the full stage."""
        return max(1, round(width * self.widths[stage]))

    def choices(self) -> list[StageChoice]:
        return [
            StageChoice(d, w, k) for d, w, k in product(self.depths, self.width_mults, self.kernels)
        ]

    def largest(self) -> Arch:
        stage = StageChoice(self.depths[-1], self.width_mults[-1], self.kernels[-1])
        return (stage,) * self.num_stages

    def smallest(self) -> Arch:
        stage = StageChoice(self.depths[0], self.width_mults[0], self.kernels[0])
        return (stage,) * self.num_stages

    def size(self) -> int:
        """How many architectures the space holds."""
        return len(self.choices()) ** self.num_stages

    def sample(self, generator: torch.Generator) -> Arch:
        """A uniformly drawn architecture (each stage's choices independent and uniform)."""

        def pick(options: tuple) -> object:
            return options[int(torch.randint(len(options), (), generator=generator))]

        return tuple(
            StageChoice(pick(self.depths), pick(self.width_mults), pick(self.kernels))
            for _ in range(self.num_stages)
        )

    def all_archs(self) -> Iterator[Arch]:
        """Every architecture, in a fixed order (for small spaces and tests)."""
        yield from product(self.choices(), repeat=self.num_stages)

    def decode(self, text: str, key: str = "backbone.arch") -> Arch:
        """The architecture of ``text``, checked against this space."""
        arch = parse(text, key)
        self.check(arch, f"{key}={text!r}")
        return arch

    def check(self, arch: Arch, name: str) -> None:
        """Raise ``ValueError`` naming ``name`` unless ``arch`` lies in this space."""
        if len(arch) != self.num_stages:
            raise ValueError(f"{name} has {len(arch)} stages but the space has {self.num_stages}")
        for i, stage in enumerate(arch):
            for what, value, allowed in (
                ("depth", stage.depth, self.depths),
                ("kernel", stage.kernel, self.kernels),
            ):
                if value not in allowed:
                    raise ValueError(
                        f"{name}: stage {i + 1} {what} {value} is not one of {list(allowed)}"
                    )
            if not any(math.isclose(stage.width, w) for w in self.width_mults):
                raise ValueError(
                    f"{name}: stage {i + 1} width {stage.width:g} is not one of "
                    f"{[float(w) for w in self.width_mults]}"
                )
