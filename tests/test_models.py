"""Backbone factory: the features → head contract, options, configs, a learning check."""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import pytest
import timm
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torch import nn

from sweeplab.models import timm_backbone
from sweeplab.models.backbone import Backbone, count_parameters
from sweeplab.models.mlp import MLP
from sweeplab.models.resnet_cifar import CifarResNet
from sweeplab.models.small_cnn import SmallCNN
from sweeplab.models.timm_backbone import MeanOfHeads, PointwiseConvHead, TimmBackbone

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BACKBONE_YAMLS = sorted((CONF_DIR / "backbone").glob("*.yaml"))
NUM_CLASSES = 5

# Small members of every option; the ViT uses 4-px patches so that 8×8 images still tokenise.
FACTORIES = {
    "mlp": lambda **kw: MLP(hidden=[32, 16], **kw),
    "small_cnn": lambda **kw: SmallCNN(widths=[8, 16, 32], **kw),
    "resnet18_cifar": lambda **kw: CifarResNet(**kw),
    "timm_resnet18": lambda **kw: TimmBackbone(name="resnet18", **kw),
    "timm_convnext_atto": lambda **kw: TimmBackbone(name="convnext_atto", **kw),
    "timm_vit_tiny": lambda **kw: TimmBackbone(
        name="vit_tiny_patch16_224", model_kwargs={"patch_size": 4}, **kw
    ),
}
# (in_chans, image_size): digits, MNIST, CIFAR.
SHAPES = [(1, 8), (1, 28), (3, 32)]
# ConvNeXt's stride-4 stem and three 2×2 stride-2 downsamples need at least 32 px.
UNSUPPORTED = {("timm_convnext_atto", 8), ("timm_convnext_atto", 28)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads cost more than they save. On a 2-vCPU VM this file took
    216 s with torch's default 2 threads and 12 s with one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(key: str, in_chans: int = 3, image_size: int = 32) -> Backbone:
    torch.manual_seed(0)
    return FACTORIES[key](num_classes=NUM_CLASSES, in_chans=in_chans, image_size=image_size)


def images(batch: int, in_chans: int, image_size: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_chans, image_size, image_size, generator=generator)


def shape_cases():
    """Every option at every shape it supports (the unsupported ones must fail loudly,
    see test_timm_model_too_small_for_the_image_raises_value_error)."""
    for key in FACTORIES:
        for in_chans, size in SHAPES:
            if (key, size) not in UNSUPPORTED:
                yield pytest.param(key, in_chans, size, id=f"{key}-{in_chans}x{size}x{size}")


# --- the contract --------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "in_chans", "size"), list(shape_cases()))
def test_shapes_of_features_and_logits(key, in_chans, size):
    model = make(key, in_chans, size).eval()
    x = images(3, in_chans, size)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert isinstance(model, Backbone)
    assert feats.shape == (3, model.num_features)
    assert logits.shape == (3, NUM_CLASSES)
    assert model.num_classes == NUM_CLASSES
    assert isinstance(model.head, nn.Module)


@pytest.mark.parametrize("key", list(FACTORIES))
def test_forward_is_head_of_features(key):
    model = make(key).eval()
    x = images(4, 3, 32)
    with torch.no_grad():
        feats = model.features(x)
        assert torch.equal(model(x), model.head(feats))
        logits, feats2 = model.logits_and_features(x)
    assert torch.equal(logits, model(x))
    assert torch.equal(feats2, feats)


@pytest.mark.parametrize("key", list(FACTORIES))
def test_gradients_reach_every_parameter(key):
    """Every parameter gets a gradient; checked after one SGD step, because zero-initialised
    residual branches (timm's ResNets zero the last BN scale) block it on the very first."""
    size = 32 if (key, 8) in UNSUPPORTED else 8
    model = make(key, in_chans=1, image_size=size).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = images(4, 1, size)
    y = torch.arange(4) % NUM_CLASSES
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for name, param in model.named_parameters():
            assert param.grad is not None, f"no gradient for {name}"
            assert torch.isfinite(param.grad).all(), f"non-finite gradient for {name}"
        opt.step()
    for name, param in model.named_parameters():
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"


@pytest.mark.parametrize("key", list(FACTORIES))
def test_state_dict_round_trip(key):
    source, target = (
        make(key).eval(),
        FACTORIES[key](num_classes=NUM_CLASSES, in_chans=3, image_size=32).eval(),
    )
    target.load_state_dict(source.state_dict())
    x = images(2, 3, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("mlp", 16),
        ("small_cnn", 32),
        ("resnet18_cifar", 512),
        ("timm_resnet18", 512),
        ("timm_convnext_atto", 320),
        ("timm_vit_tiny", 192),
    ],
)
def test_num_features(key, expected):
    assert make(key).num_features == expected


# --- small nets ----------------------------------------------------------------------------


def test_mlp_any_image_size_and_linear_classifier():
    for size in (1, 5, 64):
        model = MLP(num_classes=3, in_chans=2, image_size=size, hidden=[7])
        assert model(images(2, 2, size)).shape == (2, 3)
    linear = MLP(num_classes=3, in_chans=1, image_size=8, hidden=[])
    assert linear.num_features == 64
    assert count_parameters(linear) == 64 * 3 + 3


def test_mlp_dropout_only_in_training():
    model = MLP(num_classes=3, in_chans=1, image_size=8, hidden=[64], dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    x = images(2, 1, 8)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("size", "map_size", "pools"), [(8, 2, 2), (28, 7, 2), (32, 8, 2), (2, 2, 0)]
)
def test_small_cnn_pools_only_while_map_is_large(size, map_size, pools):
    model = SmallCNN(num_classes=3, in_chans=1, image_size=size, widths=[4, 8, 16])
    assert model.feature_map_size == map_size
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    assert model(images(2, 1, size)).shape == (2, 3)


def test_small_cnn_single_block_and_one_pixel():
    model = SmallCNN(num_classes=2, in_chans=3, image_size=1, widths=[4])
    assert model.features(images(2, 3, 1)).shape == (2, 4)


def test_resnet18_cifar_is_resnet18_with_cifar_stem():
    model = CifarResNet(num_classes=10, in_chans=3, image_size=32)
    # The widely quoted size of ResNet-18 for CIFAR-10 (kuangliu/pytorch-cifar).
    assert count_parameters(model) == 11_173_962
    stem = model.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    # Kaiming fan-out init: std ≈ sqrt(2 / (out_chans * 3 * 3)).
    conv = model.stages[3][1].conv2
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.05


def test_resnet_zero_init_residual_starts_blocks_as_identity():
    model = CifarResNet(num_classes=3, in_chans=3, image_size=8, zero_init_residual=True)
    assert all(block.bn2.weight.abs().sum() == 0 for stage in model.stages for block in stage)


# --- timm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "vit_tiny_patch16_224"])
def test_timm_split_reproduces_the_timm_model(name):
    model = TimmBackbone(num_classes=7, in_chans=3, image_size=32, name=name).eval()
    x = images(3, 3, 32)
    with torch.no_grad():
        feats = model.features(x)
        assert feats.ndim == 2
        assert torch.equal(model.head(feats), model.model(x))
        assert torch.equal(model(x), model.model(x))
    assert model.head is model.model.get_classifier()


def test_timm_cnn_features_are_pooled_not_the_feature_map():
    model = TimmBackbone(num_classes=7, in_chans=3, image_size=32, name="resnet18").eval()
    x = images(2, 3, 32)
    with torch.no_grad():
        fmap = model.model.forward_features(x)
        feats = model.features(x)
    assert fmap.ndim == 4  # timm's forward_features returns the unpooled [B, C, H, W] map
    assert feats.shape == (2, 512)
    assert torch.allclose(feats, fmap.mean(dim=(2, 3)))


def test_timm_vit_gets_img_size_and_cnn_does_not(monkeypatch):
    calls = []
    real = timm.create_model

    def recording(name, **kwargs):
        calls.append(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    vit = TimmBackbone(num_classes=3, in_chans=1, image_size=32, name="vit_tiny_patch16_224")
    assert vit.model.patch_embed.img_size == (32, 32)
    assert calls[-1]["img_size"] == 32 and calls[-1]["in_chans"] == 1

    calls.clear()
    TimmBackbone(num_classes=3, in_chans=1, image_size=32, name="resnet18", pretrained=False)
    assert calls[0]["img_size"] == 32  # asked first, rejected with a TypeError
    assert "img_size" not in calls[-1]
    assert calls[-1]["pretrained"] is False and calls[-1]["num_classes"] == 3

    calls.clear()
    vit = TimmBackbone(
        num_classes=3,
        in_chans=3,
        image_size=32,
        name="vit_tiny_patch16_224",
        model_kwargs={"img_size": 64, "patch_size": 8, "dynamic_img_size": True},
    )
    assert len(calls) == 1 and calls[0]["img_size"] == 64  # the user's value wins
    assert vit.model.patch_embed.grid_size == (8, 8)
    assert vit(images(2, 3, 32)).shape == (2, 3)


def test_timm_head_in_a_container_is_found():
    # efficientvit_m0: get_classifier() is the Linear, but a BatchNorm precedes it in `head`.
    model = TimmBackbone(num_classes=4, in_chans=3, image_size=32, name="efficientvit_m0").eval()
    assert model.head is not model.model.get_classifier()
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.head.modules())
    with torch.no_grad():
        # A trained BatchNorm is far from the identity; the split must still hold.
        for m in model.head.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        x = images(2, 3, 32)
        assert torch.equal(model(x), model.model(x))


@pytest.mark.parametrize("name", ["resnetv2_18", "dla34"])
def test_timm_pointwise_conv_classifier_is_applied_to_pooled_features(name):
    model = TimmBackbone(num_classes=4, in_chans=3, image_size=32, name=name).eval()
    assert isinstance(model.head, PointwiseConvHead)
    assert model.head.conv is model.model.get_classifier()
    with torch.no_grad():
        x = images(2, 3, 32)
        assert model.features(x).ndim == 2
        assert torch.equal(model(x), model.model(x))


def test_timm_unpooled_features_are_rejected():
    with pytest.raises(ValueError, match="not pooled"):
        TimmBackbone(
            num_classes=4,
            in_chans=3,
            image_size=32,
            name="resnet18",
            model_kwargs={"global_pool": ""},
        )


def test_timm_two_heads_on_the_same_features_are_averaged():
    model = TimmBackbone(num_classes=4, in_chans=3, image_size=32, name="levit_128s").eval()
    assert isinstance(model.head, MeanOfHeads)
    with torch.no_grad():
        x = images(2, 3, 32)
        assert torch.equal(model(x), model.model(x))


def test_timm_head_that_reads_other_tokens_is_rejected():
    with pytest.raises(ValueError, match="does not split"):
        TimmBackbone(
            num_classes=4, in_chans=3, image_size=32, name="deit_tiny_distilled_patch16_224"
        )


def test_timm_head_shares_parameters_with_the_model():
    model = TimmBackbone(num_classes=4, in_chans=3, image_size=32, name="resnet18")
    assert count_parameters(model) == count_parameters(model.model)


def test_timm_construction_is_timm_init_and_keeps_train_mode():
    """The probe uses a private generator: same seed, same weights and RNG state as timm."""
    torch.manual_seed(123)
    model = TimmBackbone(num_classes=4, in_chans=3, image_size=32, name="resnet18")
    after_backbone = torch.get_rng_state()
    torch.manual_seed(123)
    reference = timm.create_model("resnet18", num_classes=4, in_chans=3)
    assert torch.equal(after_backbone, torch.get_rng_state())
    for (name, ours), theirs in zip(
        model.model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name
    assert model.training and model.model.training


@pytest.mark.parametrize(
    ("name", "suggestion"), [("resnet181", "resnet18"), ("convnext_attoo", "convnext_atto")]
)
def test_unknown_timm_name_suggests_close_matches(name, suggestion):
    with pytest.raises(ValueError, match=r"^backbone\.name: ") as info:
        TimmBackbone(num_classes=3, in_chans=3, image_size=32, name=name)
    message = str(info.value)
    assert repr(name) in message
    assert suggestion in message.split("close matches:")[1]


def test_unknown_timm_name_without_matches():
    with pytest.raises(ValueError, match="no close match"):
        TimmBackbone(num_classes=3, in_chans=3, image_size=32, name="qqqzzzxxx")


def test_timm_model_too_small_for_the_image_raises_value_error():
    with pytest.raises(ValueError, match=r"^backbone\.name: .*convnext_atto.*1×8×8"):
        TimmBackbone(num_classes=3, in_chans=1, image_size=8, name="convnext_atto")


# --- option validation ---------------------------------------------------------------------

BASE = {"num_classes": 3, "in_chans": 1, "image_size": 8}


@pytest.mark.parametrize(
    ("cls", "options", "key"),
    [
        (MLP, {"hidden": [0]}, "backbone.hidden"),
        (MLP, {"hidden": 256}, "backbone.hidden"),
        (MLP, {"hidden": [64, 2.5]}, "backbone.hidden"),
        (MLP, {"dropout": 1.0}, "backbone.dropout"),
        (MLP, {"dropout": -0.1}, "backbone.dropout"),
        (MLP, {"num_classes": 0}, "num_classes"),
        (MLP, {"in_chans": True}, "in_chans"),
        (MLP, {"image_size": -8}, "image_size"),
        (MLP, {"name": ""}, "backbone.name"),
        (SmallCNN, {"widths": []}, "backbone.widths"),
        (SmallCNN, {"widths": "32"}, "backbone.widths"),
        (SmallCNN, {"widths": [32, 0]}, "backbone.widths"),
        (SmallCNN, {"dropout": "0.1"}, "backbone.dropout"),
        (CifarResNet, {"layers": [2, 2]}, "backbone.layers"),
        (CifarResNet, {"layers": [2, -1, 2, 2]}, "backbone.layers"),
        (CifarResNet, {"widths": [64]}, "backbone.widths"),
        (CifarResNet, {"zero_init_residual": "yes"}, "backbone.zero_init_residual"),
        (TimmBackbone, {"pretrained": "false"}, "backbone.pretrained"),
        (TimmBackbone, {"model_kwargs": [1]}, "backbone.model_kwargs"),
        (TimmBackbone, {"model_kwargs": {"num_classes": 10}}, "backbone.model_kwargs"),
        (TimmBackbone, {"name": 18}, "backbone.name"),
    ],
)
def test_bad_options_name_the_key(cls, options, key):
    with pytest.raises(ValueError, match=r"(^|\s)" + re.escape(key) + r"\s"):
        cls(**{**BASE, **options})


def test_error_message_format():
    with pytest.raises(ValueError) as info:
        SmallCNN(**BASE, widths=[32, 0])
    assert str(info.value) == "backbone.widths must be a list of positive integers, got [32, 0]"
    with pytest.raises(ValueError) as info:
        MLP(**{**BASE, "num_classes": 0})
    assert str(info.value) == "num_classes must be a positive integer, got 0"


# --- configs -------------------------------------------------------------------------------


def test_every_option_has_a_yaml():
    assert {p.stem for p in BACKBONE_YAMLS} == {
        "mlp",
        "small_cnn",
        "resnet18_cifar",
        "timm",
        "supernet",
        "subnet",
    }


@pytest.mark.parametrize("path", BACKBONE_YAMLS, ids=lambda p: p.stem)
@pytest.mark.parametrize(("in_chans", "size"), [(1, 8), (3, 32)])
def test_every_yaml_instantiates(path, in_chans, size):
    cfg = OmegaConf.load(path)
    if path.stem == "subnet":  # it extends backbone/supernet and needs an architecture
        cfg.pop("defaults")
        cfg.arch = "d1w1k3-d2w0.5k5-d1w0.75k3"
        cfg = OmegaConf.merge(OmegaConf.load(path.parent / "supernet.yaml"), cfg)
    assert {"_target_", "name"} <= set(cfg)
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg, num_classes=10, in_chans=in_chans, image_size=size)
    assert isinstance(model, Backbone)
    assert model.name == cfg.name
    model.eval()
    with torch.no_grad():
        feats = model.features(images(2, in_chans, size))
        assert feats.shape == (2, model.num_features)
        assert model.head(feats).shape == (2, 10)


def test_command_line_overrides_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            overrides=[
                "+backbone=timm",
                "backbone.name=convnext_atto",
                "+backbone.model_kwargs.drop_path_rate=0.1",
            ]
        )
    model = hydra.utils.instantiate(cfg.backbone, num_classes=10, in_chans=3, image_size=32)
    assert model.name == "convnext_atto" and model.num_features == 320
    assert isinstance(model.model, timm.models.ConvNeXt)
    assert model.model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)


def test_pretrained_flag_reaches_timm(monkeypatch):
    """No network here: check the plumbing, then build the same model without weights."""
    seen = {}
    real = timm.create_model

    def offline(name, **kwargs):
        seen.update(kwargs)
        return real(name, **{**kwargs, "pretrained": False})

    monkeypatch.setattr(timm_backbone.timm, "create_model", offline)
    model = TimmBackbone(num_classes=3, in_chans=3, image_size=32, name="resnet18", pretrained=True)
    assert seen["pretrained"] is True and model.pretrained is True


# --- learning ------------------------------------------------------------------------------


def test_small_cnn_learns_digits():
    """The default model must reach ≥ 97% on held-out digits in a few epochs."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=generator)
    train, test = perm[:1400], perm[1400:]

    torch.manual_seed(0)
    model = hydra.utils.instantiate(
        OmegaConf.load(CONF_DIR / "backbone" / "small_cnn.yaml"),
        num_classes=10,
        in_chans=1,
        image_size=8,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(6):  # 6 epochs of 22 steps; seeds 0-5 all reach ≥ 0.985
        order = train[torch.randperm(len(train), generator=generator)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc >= 0.97, f"digits test accuracy {acc:.4f}"
