"""Batch mixers: invariants of every mixer, hand-checked geometry, losses, and short runs."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from sweeplab.assembly import build_components
from sweeplab.augment import (
    CutMix,
    FMix,
    ManifoldMixup,
    MixedBatch,
    Mixup,
    MixupCutMix,
    NoMix,
    RegMixup,
    ResizeMix,
    SaliencyMix,
    SmoothMix,
)
from sweeplab.augment.base import sample_beta
from sweeplab.augment.boxes import box_masks, paste_boxes
from sweeplab.augment.fmix import fourier_masks
from sweeplab.augment.losses import MixLoss, decoupled_regulariser, soft_target_cross_entropy
from sweeplab.augment.preview import write_preview
from sweeplab.augment.resizemix import resize_into_boxes
from sweeplab.augment.saliency import saliency_peaks
from sweeplab.models import MLP, CifarResNet, SmallCNN, TimmBackbone
from sweeplab.regimes.erm import ERM
from sweeplab.tracking.identity import compute_run_id
from sweeplab.tracking.record import read_record
from sweeplab.train import execute

K = 5  # classes of the synthetic batches
MIXERS = {
    "none": lambda **kw: NoMix(num_classes=K, **{k: v for k, v in kw.items() if k == "seed"}),
    "mixup": lambda **kw: Mixup(num_classes=K, **{"alpha": 1.0, **kw}),
    "cutmix": lambda **kw: CutMix(num_classes=K, **kw),
    "cutmix_minmax": lambda **kw: CutMix(num_classes=K, minmax=(0.2, 0.8), **kw),
    "fmix": lambda **kw: FMix(num_classes=K, **kw),
    "resizemix": lambda **kw: ResizeMix(num_classes=K, **kw),
    "saliencymix": lambda **kw: SaliencyMix(num_classes=K, **kw),
    "smoothmix": lambda **kw: SmoothMix(num_classes=K, **kw),
    "manifold_mixup": lambda **kw: ManifoldMixup(num_classes=K, **kw),
    "regmixup": lambda **kw: RegMixup(num_classes=K, **kw),
    "mixup_cutmix": lambda **kw: MixupCutMix(num_classes=K, **kw),
}
BOX_MIXERS = ("cutmix", "cutmix_minmax", "saliencymix")
MODES = [("batch", "permute"), ("sample", "permute"), ("pair", "pairs"), ("sample", "flip")]


def make_batch(size: int, seed: int = 0, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, side, side, generator=generator)
    y = torch.randint(0, K, (size,), generator=generator)
    return x, y


def make_mixer(name: str, **options):
    return MIXERS[name](**options)


def mix(mixer, x, y, **step) -> MixedBatch:
    if isinstance(mixer, ManifoldMixup):
        mixer.check_backbone(SmallCNN(num_classes=K, in_chans=3, image_size=x.shape[-1]))
    return mixer.mix(x, y, **step)


def labelled_by_index(size: int, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel says which sample it came from: value 10 · i + noise."""
    x = torch.arange(size, dtype=torch.float32)[:, None, None, None] * 10.0
    x = x + 0.1 * torch.rand(size, 3, side, side, generator=torch.Generator().manual_seed(1))
    return x.expand(size, 3, side, side).contiguous(), torch.arange(size) % K


# ------------------------------------------------------------------ every mixer's invariants
@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("size", [1, 2, 7, 16])
@pytest.mark.parametrize(("lam_mode", "partner"), MODES)
def test_soft_labels_are_distributions_for_any_batch_size(name, size, lam_mode, partner):
    mixer = (
        make_mixer(name) if name == "none" else make_mixer(name, lam_mode=lam_mode, partner=partner)
    )
    x, y = make_batch(size)
    mixed = mix(mixer, x, y, batch_index=3)
    rows = 2 * size if name == "regmixup" else size
    assert mixed.x.shape == (rows, *x.shape[1:]) and mixed.x.dtype == x.dtype
    assert mixed.target.shape == (rows, K)
    assert (mixed.target >= 0).all()
    torch.testing.assert_close(mixed.target.sum(dim=1), torch.ones(rows))
    assert torch.isfinite(mixed.x).all()
    if mixed.lam is not None:
        assert ((mixed.lam >= 0) & (mixed.lam <= 1)).all()


@pytest.mark.parametrize("name", MIXERS)
def test_prob_zero_is_the_identity(name):
    options = {} if name == "none" else {"prob": 0.0}
    mixer = make_mixer(name, **options)
    x, y = make_batch(9)
    for step in range(3):
        mixed = mix(mixer, x, y, batch_index=step)
        assert not mixed.mixed and mixed.feature_mix is None
        assert torch.equal(mixed.x, x)
        assert torch.equal(mixed.target, F.one_hot(y, K).float())


@pytest.mark.parametrize("name", [n for n in MIXERS if n not in ("none", "manifold_mixup")])
def test_call_is_the_input_space_contract(name):
    mixer = make_mixer(name, seed=3)
    x, y = make_batch(6)
    x_mixed, y_soft = mixer(x, y)
    reference = make_mixer(name, seed=3).mix(x, y, epoch=0, batch_index=0)
    assert torch.equal(x_mixed, reference.x) and torch.equal(y_soft, reference.target)


@pytest.mark.parametrize("name", [n for n in MIXERS if n != "none"])
def test_same_seed_same_mix_and_steps_differ(name):
    x, y = make_batch(12)
    first = mix(make_mixer(name, seed=5, lam_mode="sample"), x, y, epoch=2, batch_index=4)
    again = mix(make_mixer(name, seed=5, lam_mode="sample"), x, y, epoch=2, batch_index=4)
    assert torch.equal(first.x, again.x) and torch.equal(first.target, again.target)
    others = [
        mix(make_mixer(name, seed=5, lam_mode="sample"), x, y, epoch=e, batch_index=b)
        for e, b in ((2, 5), (3, 4))
    ]
    assert all(not torch.equal(first.target, other.target) for other in others)


def test_mixing_leaves_the_global_rng_alone():
    x, y = make_batch(8)
    manifold = make_mixer("manifold_mixup", stages=None)
    manifold.check_backbone(SmallCNN(num_classes=K, in_chans=3, image_size=16))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    manifold.mix(x, y, batch_index=1)
    make_mixer("fmix", lam_mode="sample").mix(x, y, batch_index=1)
    make_mixer("saliencymix", lam_mode="sample").mix(x, y, batch_index=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", [n for n in MIXERS if n != "none"])
def test_label_smoothing_is_applied_once_to_each_label(name):
    mixer = make_mixer(name, label_smoothing=0.1)
    x, y = make_batch(8)
    mixed = mix(mixer, x, y, batch_index=0)
    assert mixed.target.min() >= 0.1 / K - 1e-7  # every class keeps at least ε/K
    torch.testing.assert_close(mixed.target.sum(dim=1), torch.ones(len(mixed.target)))


def test_mixed_target_is_lambda_weighted():
    mixer = make_mixer("mixup", lam_mode="sample")
    x, y = make_batch(10)
    mixed = mixer.mix(x, y, batch_index=0)
    own = F.one_hot(y, K).float()
    expected = mixed.lam[:, None] * own + (1 - mixed.lam[:, None]) * own[mixed.partner]
    torch.testing.assert_close(mixed.target, expected)
    share = (1 - mixed.lam)[:, None, None, None]
    torch.testing.assert_close(mixed.x, x * (1 - share) + x[mixed.partner] * share)


def test_off_epoch_stops_mixing_for_the_last_epochs():
    mixer = make_mixer("mixup", off_epoch=2)
    x, y = make_batch(8)
    assert mixer.mix(x, y, epoch=7, batch_index=0, max_epochs=10).mixed
    assert not mixer.mix(x, y, epoch=8, batch_index=0, max_epochs=10).mixed
    assert not mixer.mix(x, y, epoch=9, batch_index=0, max_epochs=10).mixed
    assert mixer.mix(x, y, epoch=9, batch_index=0, max_epochs=-1).mixed  # no epoch budget


def test_prob_mixes_about_that_fraction_of_batches():
    mixer = make_mixer("cutmix", prob=0.3)
    x, y = make_batch(4)
    mixed = sum(mixer.mix(x, y, batch_index=i).mixed for i in range(400))
    assert 90 <= mixed <= 150


def test_partner_choices():
    mixer = make_mixer("mixup", partner="pairs", lam_mode="pair")
    partner, draw = mixer.draw_partners(9, torch.Generator().manual_seed(0))
    assert torch.equal(partner[partner], torch.arange(9))  # an involution
    assert (partner == torch.arange(9)).sum() == 1  # the odd one out keeps itself
    assert torch.equal(draw, draw[partner])  # a pair shares its draw
    flipped, _ = make_mixer("mixup", partner="flip").draw_partners(4, torch.Generator())
    assert flipped.tolist() == [3, 2, 1, 0]
    permuted, _ = make_mixer("mixup").draw_partners(50, torch.Generator().manual_seed(0))
    assert sorted(permuted.tolist()) == list(range(50))


def test_beta_draws_follow_alpha():
    generator = torch.Generator().manual_seed(0)
    draws = sample_beta(20.0, 4000, generator)
    assert abs(draws.mean() - 0.5) < 0.01 and draws.std() < 0.09  # RegMixup's α keeps λ near ½
    small = sample_beta(0.2, 4000, generator)
    assert ((small < 0.1) | (small > 0.9)).float().mean() > 0.6  # mixup's α: mostly near 0 or 1


# ---------------------------------------------------------------------- box geometry
@pytest.mark.parametrize("name", [*BOX_MIXERS, "mixup_cutmix"])
@pytest.mark.parametrize("lam_mode", ["batch", "sample"])
def test_box_lambda_is_the_unpasted_area(name, lam_mode):
    options = {"switch_prob": 1.0} if name == "mixup_cutmix" else {}
    mixer = make_mixer(name, partner="flip", lam_mode=lam_mode, **options)
    x, y = labelled_by_index(16)
    for step in range(20):
        mixed = mixer.mix(x, y, batch_index=step)
        source = torch.round(mixed.x[:, 0] / 10)  # which sample each pixel came from
        own = (source == torch.arange(16)[:, None, None]).float().mean(dim=(1, 2))
        from_partner = (source == mixed.partner[:, None, None]).float().mean(dim=(1, 2))
        torch.testing.assert_close(own + from_partner, torch.ones(16))
        torch.testing.assert_close(mixed.lam, own)


def test_cutmix_box_follows_lambda_before_clipping():
    x, y = make_batch(1, side=32)
    areas = []
    for step in range(300):
        mixed = make_mixer("cutmix").mix(x.expand(2, -1, -1, -1), y.repeat(2), batch_index=step)
        areas.append(1 - float(mixed.lam[0]))
    # λ ~ U(0, 1) (α = 1) before clipping: the mean pasted area is below ½ after it
    assert 0.2 < sum(areas) / len(areas) < 0.5


def test_minmax_boxes_stay_inside_and_within_range():
    mixer = make_mixer("cutmix_minmax", lam_mode="sample", partner="flip")
    x, y = labelled_by_index(8, side=20)
    for step in range(30):
        mixed = mixer.mix(x, y, batch_index=step)
        pasted = torch.round(mixed.x[:, 0] / 10) != torch.arange(8)[:, None, None]
        rows = pasted.any(dim=2).sum(dim=1)
        cols = pasted.any(dim=1).sum(dim=1)
        assert ((rows >= 4) & (rows <= 16) & (cols >= 4) & (cols <= 16)).all()


def test_paste_boxes_by_hand():
    x = torch.zeros(2, 1, 4, 4)
    x[1] = 1.0
    boxes = torch.tensor([[1, 3, 0, 2], [0, 4, 3, 4]])  # a 2×2 box, then a 4×1 strip
    mixed, lam = paste_boxes(x, torch.tensor([1, 0]), torch.tensor([0, 1]), boxes)
    assert mixed[0, 0].tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert mixed[1, 0, :, 3].tolist() == [0, 0, 0, 0] and mixed[1, 0, :, :3].eq(1).all()
    assert lam.tolist() == [1 - 4 / 16, 1 - 4 / 16]
    assert box_masks(boxes, 4, 4).shape == (2, 1, 4, 4)


# ---------------------------------------------------------------------------- FMix
@pytest.mark.parametrize(("height", "width"), [(8, 8), (32, 32), (15, 20)])
def test_fmix_mask_mean_is_lambda_within_one_pixel(height, width):
    generator = torch.Generator().manual_seed(0)
    lam = torch.rand(64, generator=generator)
    masks = fourier_masks(lam, height, width, 3.0, generator)
    assert masks.dtype == torch.bool and masks.shape == (64, height, width)
    error = (masks.float().mean(dim=(1, 2)) - lam).abs()
    assert (error <= 1.0 / (height * width)).all()


def test_fmix_masks_are_low_frequency_blobs():
    generator = torch.Generator().manual_seed(0)
    masks = fourier_masks(torch.full((32,), 0.5), 32, 32, 3.0, generator).float()
    # neighbours mostly agree: a smooth mask has few boundary pixels, unlike random noise
    agreement = (masks[:, 1:] == masks[:, :-1]).float().mean()
    assert agreement > 0.9


def test_fmix_lambda_is_the_own_pixel_share():
    mixer = make_mixer("fmix", lam_mode="sample", partner="flip")
    x, y = labelled_by_index(6)
    mixed = mixer.mix(x, y, batch_index=0)
    own = (torch.round(mixed.x[:, 0] / 10) == torch.arange(6)[:, None, None]).float()
    torch.testing.assert_close(mixed.lam, own.mean(dim=(1, 2)))


# ------------------------------------------------------------------------- ResizeMix
@pytest.mark.parametrize("side", [8, 32])
def test_resizemix_patches_stay_within_the_scale_range(side):
    low, high = 0.1, 0.8
    mixer = make_mixer("resizemix", lam_mode="sample", partner="flip", scale=(low, high))
    x, y = labelled_by_index(8, side=side)
    for step in range(25):
        mixed = mixer.mix(x, y, batch_index=step)
        pasted = torch.round(mixed.x[:, 0] / 10) == mixed.partner[:, None, None]
        rows, cols = pasted.any(dim=2).sum(dim=1), pasted.any(dim=1).sum(dim=1)
        for extent in (rows, cols):
            fraction = extent.float() / side
            assert (fraction >= low).all() and (fraction <= high + 1e-6).all()
        torch.testing.assert_close(mixed.lam, 1 - rows * cols / side**2)


def test_resizemix_pastes_the_whole_resized_partner():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[4, 20, 8, 24], [0, 8, 0, 8]])
    patches = resize_into_boxes(x, boxes)
    expected = F.interpolate(x[:1], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(patches[:1, :, 4:20, 8:24], expected)
    expected = F.interpolate(x[1:], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(patches[1:, :, :8, :8], expected)


# ---------------------------------------------------------------------- SaliencyMix
def test_saliency_peak_finds_the_odd_spot():
    x = torch.zeros(3, 3, 32, 32)
    spots = [(5, 7), (20, 25), (28, 3)]
    for i, (row, col) in enumerate(spots):
        x[i, :, row - 1 : row + 2, col - 1 : col + 2] = 1.0
    peaks = saliency_peaks(x)
    for (row, col), peak in zip(spots, peaks.tolist(), strict=True):
        assert abs(peak[0] - row) <= 2 and abs(peak[1] - col) <= 2


def test_saliency_peaks_of_large_images_in_image_pixels():
    x = torch.zeros(1, 1, 128, 96)
    x[0, 0, 100:106, 20:26] = 1.0
    row, col = saliency_peaks(x)[0].tolist()
    assert abs(row - 103) <= 6 and abs(col - 23) <= 6


def test_saliencymix_box_holds_the_partners_peak():
    x = torch.zeros(4, 1, 32, 32)
    for i, (row, col) in enumerate([(6, 6), (25, 25), (6, 25), (25, 6)]):
        x[i, :, row - 1 : row + 2, col - 1 : col + 2] = 1.0 + i
    mixer = make_mixer("saliencymix", lam_mode="sample", partner="flip", alpha=2.0)
    mixed = mixer.mix(x, torch.arange(4), batch_index=0)
    for i in range(4):
        if mixed.lam[i] < 1:
            partner = int(mixed.partner[i])
            assert (mixed.x[i] == 1.0 + partner).any()  # the partner's spot was pasted in


# ---------------------------------------------------------------------- manifold mixup
class _Recorder:
    """Output of every mixing stage during one forward pass."""

    def __init__(self, backbone: nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handles = [
            m.register_forward_hook(lambda _m, _i, out: self.outputs.append(out.detach().clone()))
            for m in backbone.mixing_stages()
        ]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


BACKBONES = {
    "small_cnn": lambda: SmallCNN(num_classes=K, in_chans=3, image_size=16),
    "mlp": lambda: MLP(num_classes=K, in_chans=3, image_size=16, hidden=(32, 16, 8)),
    "resnet_cifar": lambda: CifarResNet(
        num_classes=K, in_chans=3, image_size=16, layers=(1, 1, 1), widths=(8, 16, 32)
    ),
    "timm_resnet": lambda: TimmBackbone(num_classes=K, in_chans=3, image_size=16, name="resnet10t"),
}


@pytest.mark.parametrize("backbone_name", BACKBONES)
def test_manifold_mixup_mixes_at_the_chosen_stage_only(backbone_name):
    torch.manual_seed(0)
    backbone = BACKBONES[backbone_name]().eval()  # eval: BatchNorm must not mix the batch
    stages = len(backbone.mixing_stages())
    assert stages >= 2
    mixer = make_mixer("manifold_mixup", stages=None, include_input=False, lam_mode="sample")
    mixer.check_backbone(backbone)
    x, y = make_batch(6)
    clean = _Recorder(backbone)
    with torch.no_grad():
        clean_logits = backbone(x)
    clean.close()
    seen = set()
    for step in range(40):
        mixed = mixer.mix(x, y, batch_index=step)
        assert mixed.x is x  # the input is untouched
        stage = mixed.feature_mix.stage
        seen.add(stage)
        recorder = _Recorder(backbone)
        with torch.no_grad():
            logits = mixed.forward(backbone)
        recorder.close()
        for k, (before, after) in enumerate(zip(clean.outputs, recorder.outputs, strict=True)):
            if k + 1 <= stage:  # up to the chosen stage (recorded before its mix): clean
                torch.testing.assert_close(after, before)
            else:  # later ones see the mix
                assert not torch.allclose(after, before)
        assert not torch.allclose(logits, clean_logits)
        assert not any(m._forward_hooks for m in backbone.mixing_stages())  # hook removed
    assert seen == set(range(1, stages + 1))


def test_manifold_mixup_output_of_the_stage_is_the_mix():
    torch.manual_seed(0)
    backbone = BACKBONES["small_cnn"]().eval()
    mixer = make_mixer("manifold_mixup", stages=[2], include_input=False, lam_mode="sample")
    mixer.check_backbone(backbone)
    x, y = make_batch(6)
    stage_module = backbone.mixing_stages()[1]
    following = backbone.body[list(backbone.body).index(stage_module) + 1]  # what reads the stage
    seen = []
    handle = following.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    with torch.no_grad():
        backbone(x)
        mixed = mixer.mix(x, y, batch_index=0)
        mixed.forward(backbone)
    handle.remove()
    clean, received = seen
    share = (1 - mixed.lam).view(-1, 1, 1, 1)
    torch.testing.assert_close(received, clean * (1 - share) + clean[mixed.partner] * share)


def test_manifold_mixup_stage_zero_mixes_the_input():
    mixer = make_mixer("manifold_mixup", stages=[1], include_input=True)
    mixer.check_backbone(BACKBONES["small_cnn"]())
    x, y = make_batch(6)
    picks = [mixer.mix(x, y, batch_index=i) for i in range(30)]
    at_input = [m for m in picks if m.feature_mix is None]
    assert at_input and len(at_input) < len(picks)
    assert all(not torch.equal(m.x, x) for m in at_input)


def test_manifold_mixup_rejects_a_backbone_it_cannot_hook():
    mixer = make_mixer("manifold_mixup")
    with pytest.raises(ValueError, match=r"augment=manifold_mixup.*backbone 'mlp'"):
        mixer.check_backbone(MLP(num_classes=K, in_chans=1, image_size=8, hidden=[]))
    with pytest.raises(ValueError, match=r"augment.stages=\[1, 5\].*3 stages"):
        make_mixer("manifold_mixup", stages=[1, 5]).check_backbone(
            SmallCNN(num_classes=K, in_chans=1, image_size=8)
        )
    with pytest.raises(ValueError, match=r"augment\.include_input"):
        make_mixer("manifold_mixup", stages=[0, 1])
    with pytest.raises(TypeError, match="mixes inside the model"):
        mixer(*make_batch(2))


# --------------------------------------------------------------------------- losses
def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(6, K)
    target = torch.softmax(torch.randn(6, K), dim=1)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, target).mean(), F.cross_entropy(logits, target)
    )


def test_unmixed_loss_is_exactly_hard_label_cross_entropy():
    logits, y = torch.randn(7, K), torch.randint(0, K, (7,))
    mixer = NoMix(num_classes=K, label_smoothing=0.1)
    batch = mixer.mix(torch.zeros(7, 1, 2, 2), y)
    assert torch.equal(mixer.loss(logits, batch), F.cross_entropy(logits, y, label_smoothing=0.1))
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, batch.target).mean(),
        F.cross_entropy(logits, y, label_smoothing=0.1),
    )


def test_decoupled_loss_with_weight_zero_is_plain_mixup_cross_entropy():
    x, y = make_batch(8)
    mixed = make_mixer("mixup", lam_mode="sample").mix(x, y, batch_index=0)
    logits = torch.randn(8, K)
    plain = MixLoss(decoupled_weight=0.0)(logits, mixed)
    lam, partners = mixed.lam, y[mixed.partner]
    by_hand = (
        lam * F.cross_entropy(logits, y, reduction="none")
        + (1 - lam) * F.cross_entropy(logits, partners, reduction="none")
    ).mean()
    torch.testing.assert_close(plain, by_hand)
    regularised = MixLoss(decoupled_weight=0.5)(logits, mixed)
    assert regularised > plain


def test_decoupled_regulariser_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5]])
    labels, partners = torch.tensor([0, 2]), torch.tensor([1, 2])
    term = decoupled_regulariser(logits, labels, partners, torch.tensor([0.3, 0.6]))
    z = logits[0]
    without_1 = torch.logsumexp(z[[0, 2, 3]], 0) - z[0]  # −log p(a | not b)
    without_0 = torch.logsumexp(z[[1, 2, 3]], 0) - z[1]  # −log p(b | not a)
    torch.testing.assert_close(term[0], without_1 + without_0)
    assert term[1] == 0  # a class mixed with itself has nothing to decouple
    untouched = decoupled_regulariser(logits, labels, partners, torch.tensor([1.0, 0.5]))
    assert untouched[0] == 0  # λ = 1: only one image in the row


def test_regmixup_loss_weighs_clean_and_mixed_halves():
    x, y = make_batch(6)
    mixer = make_mixer("regmixup", mixed_weight=3.0)
    mixed = mixer.mix(x, y, batch_index=0)
    assert mixed.clean_rows == 6 and torch.equal(mixed.x[:6], x)
    logits = torch.randn(12, K)
    clean = F.cross_entropy(logits[:6], y)
    mixed_ce = soft_target_cross_entropy(logits[6:], mixed.target[6:]).mean()
    torch.testing.assert_close(mixer.loss(logits, mixed), (clean + 3 * mixed_ce) / 4)


def test_mixup_cutmix_switches():
    x, y = make_batch(16)
    only_mixup = make_mixer("mixup_cutmix", switch_prob=0.0, lam_mode="sample").mix(x, y)
    share = (1 - only_mixup.lam)[:, None, None, None]
    torch.testing.assert_close(only_mixup.x, x * (1 - share) + x[only_mixup.partner] * share)
    both = make_mixer("mixup_cutmix", lam_mode="sample")
    kinds = set()
    for step in range(5):
        mixed = both.mix(x, y, batch_index=step)
        for i in range(16):
            changed = (mixed.x[i] != x[i]).any(dim=0)
            if mixed.partner[i] != i and 0 < mixed.lam[i] < 1:
                kinds.add("box" if changed.float().mean() < 1 else "blend")
    assert kinds == {"box", "blend"}


# ----------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("mixup", {"alpha": -1}, "augment.alpha must be > 0, got -1"),
        ("mixup", {"alpha": 0}, "augment.alpha must be > 0, got 0"),
        ("regmixup", {"alpha": 0.0}, "augment.alpha must be > 0"),
        ("cutmix", {"prob": 1.5}, r"augment.prob must be in \[0, 1\], got 1.5"),
        ("fmix", {"prob": -0.1}, r"augment.prob must be in \[0, 1\]"),
        ("fmix", {"decay_power": 0}, "augment.decay_power must be > 0"),
        ("resizemix", {"scale": (0.0, 0.5)}, r"augment.scale must be a pair \[min, max\]"),
        ("resizemix", {"scale": (0.2, 1.5)}, "augment.scale"),
        ("resizemix", {"scale": (0.8, 0.2)}, "augment.scale"),
        ("cutmix", {"minmax": (0.5, 1.2)}, "augment.minmax"),
        ("smoothmix", {"sigma": (0, 0.5)}, "augment.sigma"),
        ("mixup_cutmix", {"mixup_alpha": -0.8}, "augment.mixup_alpha must be > 0"),
        ("mixup_cutmix", {"switch_prob": 2}, "augment.switch_prob"),
        ("mixup", {"lam_mode": "pixel"}, "augment.lam_mode must be one of batch, pair, sample"),
        ("mixup", {"lam_mode": "pair"}, "augment.partner=pairs"),
        ("mixup", {"label_smoothing": 1.0}, r"augment.label_smoothing must be in \[0, 1\)"),
        ("mixup", {"off_epoch": -1}, "augment.off_epoch"),
        ("mixup", {"decoupled_weight": -0.1}, "augment.decoupled_weight must be ≥ 0"),
        ("regmixup", {"mixed_weight": 0}, "augment.mixed_weight must be > 0"),
        ("manifold_mixup", {"stages": [1, 1]}, "augment.stages"),
    ],
)
def test_bad_options_name_the_key(name, options, message):
    with pytest.raises(ValueError, match=message):
        make_mixer(name, **options)


def test_regime_and_mixer_smoothing_must_agree():
    backbone = SmallCNN(num_classes=K, in_chans=1, image_size=8)
    optimizer = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    module = ERM(
        backbone, optimizer, label_smoothing=0.1, mixer=Mixup(num_classes=K, label_smoothing=0.1)
    )
    assert module.label_smoothing == 0.1
    module = ERM(backbone, optimizer, mixer=Mixup(num_classes=K, label_smoothing=0.2))
    assert module.label_smoothing == 0.2
    assert ERM(backbone, optimizer, label_smoothing=0.1).mixer.label_smoothing == 0.1
    with pytest.raises(
        ValueError, match=r"regime\.label_smoothing=0\.1 and augment\.label_smoothing=0\.2"
    ):
        ERM(
            backbone,
            optimizer,
            label_smoothing=0.1,
            mixer=Mixup(num_classes=K, label_smoothing=0.2),
        )
    with pytest.raises(ValueError, match="3 classes"):
        ERM(backbone, optimizer, mixer=Mixup(num_classes=3))


# ------------------------------------------------------------------------ the picture
@pytest.mark.parametrize("name", ["cutmix", "manifold_mixup", "regmixup", "none"])
def test_preview_is_written_as_a_png(make_cfg, tmp_path, name):
    cfg = make_cfg(f"augment={name}")
    datamodule, module = build_components(cfg)
    path = write_preview(
        module.mixer, datamodule, tmp_path / "plots" / "mixed.png", torch.device("cpu")
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob(".*.tmp"))


# -------------------------------------------------------------------- short real runs
@pytest.mark.parametrize("name", ["mixup", "cutmix", "manifold_mixup", "regmixup"])
def test_short_run_with_a_mixer_completes_with_its_picture(make_cfg, store, name):
    overrides = [f"augment={name}", "trainer.max_epochs=1", "data.train_subset=256"]
    cfg = make_cfg(*overrides)
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg), overrides)
    assert outcome.status == "complete", outcome.error
    record = read_record(outcome.run_dir)
    assert record["config"]["augment"]["_target_"].startswith("sweeplab.augment.")
    assert (outcome.run_dir / "plots" / "mixed_samples.png").exists()
    assert math.isfinite(record["metrics"]["test/cls/acc"])


def test_bad_mixer_option_fails_before_training(make_cfg, store):
    cfg = make_cfg("augment=mixup", "augment.alpha=-1")
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg))
    assert outcome.status == "failed"
    assert "augment.alpha must be > 0, got -1" in outcome.error
    assert not (outcome.run_dir / "checkpoints").exists()


def test_manifold_mixup_on_an_unhookable_backbone_fails_before_training(make_cfg, store):
    cfg = make_cfg("augment=manifold_mixup", "backbone=mlp", "backbone.hidden=[]")
    outcome = execute(cfg, store / "runs" / cfg.name / compute_run_id(cfg))
    assert outcome.status == "failed"
    assert "augment=manifold_mixup" in outcome.error and "backbone" in outcome.error
    assert not (outcome.run_dir / "checkpoints").exists()


class _StopAfterFirstEpoch(pl.Callback):
    """End fit after epoch 0 (its checkpoint written), as a kill after a checkpoint would."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


@pytest.mark.filterwarnings("ignore:.*LeafSpec", "ignore:.*callbacks used to create the checkpoint")
@pytest.mark.parametrize("name", ["cutmix", "manifold_mixup"])
def test_resumed_training_sees_the_same_mixes(make_cfg, tmp_path, name):
    """Two epochs straight, or one epoch, a stop, and a resume from the checkpoint: the
    same weights, because every mix is drawn from (seed, epoch, batch), not from state."""
    cfg = make_cfg(f"augment={name}", "data.train_subset=192", "augment.lam_mode=sample")

    def fit(callbacks, ckpt_path=None, root="run"):
        pl.seed_everything(0, verbose=False)
        datamodule, module = build_components(cfg)
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=bool(callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=str(tmp_path / root),
            callbacks=callbacks,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        return module, trainer

    straight, straight_trainer = fit([])
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _, stopped = fit([checkpoint, _StopAfterFirstEpoch()], root="stopped")
    assert 0 < stopped.global_step < straight_trainer.global_step
    resumed, _ = fit([], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), root="resumed")
    for (key, expected), actual in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(actual, expected, msg=key)
