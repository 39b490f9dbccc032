"""Any timm model as a sweeplab backbone: ``backbone=timm backbone.name=convnext_atto``.

timm splits a model as ``forward_head(forward_features(x))``; for CNNs
``forward_features`` is the *unpooled* map, so the pooled penultimate features
are ``forward_head(..., pre_logits=True)`` and the head is the classifier that
follows. Families disagree on where that classifier sits (``fc``, ``head.fc``,
``head.linear`` behind a BatchNorm, a 1×1 conv, two distillation heads), so the
split is checked once at construction against the model's own output, and the
module that reproduces it becomes ``head``. A model whose head cannot be split
that way fails here, loudly, instead of silently training a different network.
With timm 1.0.31, 641 of the 663 architectures under 30M parameters split with
bitwise-equal logits; the rest (distilled DeiT and PiT, CrossViT, VOLO,
EfficientViM) combine separate tokens or branches and are rejected.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from sweeplab import checks
from sweeplab.models.backbone import Backbone

# Set from the data, never from backbone.model_kwargs.
RESERVED_KWARGS = ("num_classes", "in_chans", "pretrained")
# Name prefixes that timm resolves remotely or on disk, not through its registry.
EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
# Probe: a fixed input from a private generator, so construction leaves the global RNG alone.
PROBE_BATCH = 2
PROBE_SEED = 0
# Recomputing the same ops gives bitwise-equal logits on one device; allow for
# reductions that a backend may order differently, but far below what a skipped
# BatchNorm (≈ 5e-6 relative at eps = 1e-5) would change.
PROBE_RTOL = 1e-6
PROBE_ATOL = 1e-7


class MeanOfHeads(nn.Module):
    """Average of several classifiers on the same features (LeViT's distilled head)."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.heads[0](x)
        for head in self.heads[1:]:
            out = out + head(x)
        return out / len(self.heads)


class PointwiseConvHead(nn.Module):
    """A 1×1 convolution used as the classifier, applied to pooled ``[B, D]`` features."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :, None, None]).flatten(1)


class TimmBackbone(Backbone):
    """A timm model split into ``features`` (pre-logits) and ``head`` (classifier).

    ``model_kwargs`` go to ``timm.create_model`` as they are (``drop_rate``,
    ``drop_path_rate``, ``patch_size``…). ``img_size=image_size`` is passed to the
    models that take it (ViT-style models with position embeddings) unless
    ``model_kwargs`` sets ``img_size`` itself. The timm model stays whole under
    ``self.model``; ``self.head`` is its classifier (the same parameters), so
    ``self.model(x)`` and ``self(x)`` agree.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        name: str = "resnet18",
        pretrained: bool = False,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, name=name
        )
        self.pretrained = checks.boolean("backbone.pretrained", pretrained)
        kwargs = checks.mapping("backbone.model_kwargs", model_kwargs)
        reserved = sorted(set(RESERVED_KWARGS) & kwargs.keys())
        if reserved:
            raise ValueError(
                f"backbone.model_kwargs must not set {reserved}: num_classes and in_chans come "
                f"from the data and pretrained is backbone.pretrained"
            )
        check_model_name(self.name)
        self.model = create_model(
            self.name,
            pretrained=self.pretrained,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            image_size=self.image_size,
            model_kwargs=kwargs,
        )
        self.head, self.num_features = split_head(
            self.model, self.name, self.in_chans, self.image_size
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def mixing_stages(self) -> list[nn.Module]:
        """The modules named in the model's ``feature_info`` (for most CNNs the stem first)."""
        infos = getattr(self.model, "feature_info", None) or []
        return [self.model.get_submodule(info["module"]) for info in infos if info.get("module")]


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` for a name timm does not know, suggesting close ones."""
    if name.startswith(EXTERNAL_PREFIXES) or timm.is_model(name):
        return
    arch = name.split(".", 1)[0]
    known = timm.list_models()
    matches = difflib.get_close_matches(arch, known, n=5, cutoff=0.6)
    matches += [m for m in timm.list_models(f"*{arch}*") if m not in matches][: 8 - len(matches)]
    hint = f"close matches: {', '.join(matches)}" if matches else "no close match"
    raise ValueError(
        f"backbone.name: unknown timm model {name!r} ({hint}; "
        f"timm.list_models('*pattern*') lists the {len(known)} names)"
    )


def create_model(
    name: str,
    *,
    pretrained: bool,
    num_classes: int,
    in_chans: int,
    image_size: int,
    model_kwargs: dict[str, Any],
) -> nn.Module:
    """``timm.create_model`` with ``img_size`` for the models whose constructor takes it.

    Whether a model takes ``img_size`` is a property of its constructor, not of
    its pretrained config, so ask the constructor: CNNs reject the keyword with a
    ``TypeError`` naming it, and are then built without it.
    """
    kwargs = dict(pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    if "img_size" not in model_kwargs:
        try:
            return timm.create_model(name, img_size=image_size, **kwargs)
        except TypeError as err:
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, **kwargs)


def split_head(
    model: nn.Module, name: str, in_chans: int, image_size: int
) -> tuple[nn.Module, int]:
    """Find the classifier that maps pre-logits features to the model's logits.

    Runs the model once in eval mode on a fixed probe batch and tries
    ``get_classifier()``, the last linear layer inside it when it is a container
    that pools first, and each module that contains it (a BatchNorm before the
    linear layer lives in the container). The candidate closest to the model's
    logits wins, the smaller one on a tie: a freshly initialised BatchNorm is
    nearly the identity, so "within tolerance" alone cannot tell it apart.
    Returns the head and the feature width ``D``.
    """
    generator = torch.Generator().manual_seed(PROBE_SEED)
    x = torch.randn(PROBE_BATCH, in_chans, image_size, image_size, generator=generator)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                feats = model.forward_head(model.forward_features(x), pre_logits=True)
            except Exception as err:
                raise _unfit(name, in_chans, image_size, err) from err
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
                shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
                raise ValueError(
                    f"backbone.name: timm model {name!r} gives pre-logits features of shape "
                    f"{shape}, not pooled [B, D]; keep global pooling on in backbone.model_kwargs"
                )
            try:
                logits = model(x)
            except Exception as err:
                raise _unfit(name, in_chans, image_size, err) from err
            best, best_err = None, None
            for head in _head_candidates(model):
                try:
                    out = head(feats)
                except Exception:  # a container that expects the unpooled map: keep climbing
                    continue
                if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
                    continue
                if torch.allclose(out, logits, rtol=PROBE_RTOL, atol=PROBE_ATOL):
                    err = (out - logits).abs().max().item()
                    if best_err is None or err < best_err:  # ties keep the smaller module
                        best, best_err = head, err
            if best is not None:
                return best, int(feats.shape[1])
    finally:
        model.train(was_training)
    raise ValueError(
        f"backbone.name: timm model {name!r} has a classifier that does not split into "
        f"features → head: its logits are not a function of forward_head(pre_logits=True), "
        f"as when several heads read separate tokens or branches (distilled DeiT and PiT, "
        f"CrossViT, VOLO, EfficientViM); choose another model, e.g. a non-distilled variant"
    )


def _unfit(name: str, in_chans: int, image_size: int, err: Exception) -> ValueError:
    return ValueError(
        f"backbone.name: timm model {name!r} fails on a {in_chans}×{image_size}×{image_size} "
        f"input ({type(err).__name__}: {err}); pick a model that fits this image size or "
        f"adjust backbone.model_kwargs"
    )


def _head_candidates(model: nn.Module) -> list[nn.Module]:
    """``get_classifier()`` (averaged if timm returns several heads), the last linear
    layer inside it if it is a container, then the modules that contain it."""
    classifier = model.get_classifier()
    heads = list(classifier) if isinstance(classifier, tuple | list) else [classifier]
    if not heads or not all(isinstance(h, nn.Module) for h in heads):
        return []
    if len(heads) > 1:
        candidates = [MeanOfHeads([_as_head(h) for h in heads])]
    else:
        candidates = [_as_head(heads[0])]
        inner = [m for m in heads[0].modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if inner and inner[-1] is not heads[0]:  # e.g. a ClassifierHead that pools first
            candidates.append(_as_head(inner[-1]))

    names = {id(m): n for n, m in model.named_modules()}
    paths = [names[id(h)].split(".") for h in heads if id(h) in names]
    if len(paths) != len(heads):
        return candidates
    # Deepest module containing every head, then its ancestors, the root excluded.
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if len(heads) == 1:
        common = common[:-1]  # the classifier itself is already the first candidate
    while common:
        candidates.append(_as_head(model.get_submodule(".".join(common))))
        common.pop()
    return candidates


def _as_head(module: nn.Module) -> nn.Module:
    """A 1×1-conv classifier (BiT/ResNetV2, DLA, DPN) reads ``[B, D]`` as ``[B, D, 1, 1]``."""
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
        return PointwiseConvHead(module)
    return module
