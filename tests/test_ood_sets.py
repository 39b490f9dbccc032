"""OOD sets: the near/far contract, disjoint val and test parts, adaptation to the model's
input, the readers (held-out classes, noise, image folders, torchvision), and every list
in conf/eval/ood_sets."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from sweeplab.data import DigitsDataModule, ImageFolderDataModule
from sweeplab.data import ood_sets as ood_sets_module
from sweeplab.data.ood_sets import (
    GROUPS,
    HeldOutClasses,
    ImageFolderSet,
    OODSet,
    SyntheticNoise,
    TorchvisionSet,
    adapt_images,
)
from tests.conftest import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-png.tar.gz"


def model_input(channels: int, size: int) -> SimpleNamespace:
    """What an OOD set reads from a data module for a set that is not held-out classes."""
    return SimpleNamespace(image_shape=(channels, size, size))


def row_keys(images: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.flatten(1)}


def write_folder(root: Path, pools: dict[str, int], size=(10, 12)) -> Path:
    """PNGs ``root/<pool>/<class>/<i>.png`` of class ``"abc"[i % 3]``, solid grey ``base + i``
    with base 10 for train and 150 for test (pool ``flat``: ``root/<class>/<i>.png``)."""
    for pool, count in pools.items():
        for i in range(count):
            folder = root / ("" if pool == "flat" else pool) / "abc"[i % 3]
            folder.mkdir(parents=True, exist_ok=True)
            base = 150 if pool.startswith("test") else 10
            Image.fromarray(np.full((*size, 3), base + i, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def values(images: torch.Tensor) -> list[int]:
    """The grey value of each solid image."""
    return images[:, 0, 0, 0].tolist()


# ------------------------------------------------------------------------- the contract
def test_group_must_be_near_or_far_naming_the_key():
    assert GROUPS == ("near", "far")
    with pytest.raises(ValueError, match=r"group.*near, far.*'middle'"):
        SyntheticNoise(group="middle")
    with pytest.raises(ValueError, match=r"eval\.ood\.sets\.noise\.group"):
        SyntheticNoise(group="middle", name="noise")
    with pytest.raises(ValueError, match="split"):
        SyntheticNoise().load(model_input(1, 8), "train")


# --------------------------------------------------------------------------- adaptation
def test_adaptation_resizes_and_repeats_grey_and_logs_it(caplog):
    grey = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    with caplog.at_level(logging.INFO, logger="sweeplab.data.ood_sets"):
        out = adapt_images(grey, (3, 32, 32), "mnist")
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
    resized = TF.resize(grey, [32, 32], antialias=True)
    assert all(torch.equal(out[:, c : c + 1], resized) for c in range(3))
    assert "mnist" in caplog.text and "28×28 → 32×32" in caplog.text and "grey" in caplog.text


def test_adaptation_averages_colour_to_grey_and_leaves_matching_sets_alone(caplog):
    colour = torch.tensor([30, 60, 91], dtype=torch.uint8)[None, :, None, None].expand(2, 3, 8, 8)
    assert adapt_images(colour, (1, 8, 8), "c").unique().tolist() == [60]  # 60.33 → 60
    same = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sweeplab.data.ood_sets"):
        assert torch.equal(adapt_images(same, (3, 8, 8), "same"), same)
    assert not caplog.records
    with pytest.raises(ValueError, match="channels"):
        adapt_images(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), (3, 8, 8), "two")


# ---------------------------------------------------------------------- held-out classes
def test_held_out_classes_val_and_test_are_disjoint_and_shaped_like_the_data():
    dm = DigitsDataModule(seed=0, held_out_classes=[8, 9])
    dm.setup()
    ood = HeldOutClasses()
    assert ood.group == "near"
    test, val = ood.load(dm, "test"), ood.load(dm, "val")
    assert test.shape[1:] == val.shape[1:] == dm.image_shape and test.dtype == torch.uint8
    assert torch.equal(test, dm.held_out[0])
    assert set(dm.held_out[1].tolist()) == set(dm.held_out_val[1].tolist()) == {8, 9}
    # 20% of the 357 images of 8 and 9 are test; the other 80% make the val part.
    assert len(test) + len(val) == 174 + 180 and len(val) > 3 * len(test)
    keys = {split: row_keys(dm.split(split)[0]) for split in ("train", "val", "test")}
    assert not row_keys(val) & row_keys(test)
    assert not (row_keys(val) | row_keys(test)) & (keys["train"] | keys["val"] | keys["test"])


def test_held_out_classes_without_them_explain_both_ways_out():
    dm = DigitsDataModule(seed=0)
    dm.setup()
    with pytest.raises(ValueError, match=r"data\.held_out_classes.*eval\.ood\.sets\.held_out=null"):
        HeldOutClasses().load(dm, "test")


def test_streaming_image_folder_has_the_same_held_out_val(tmp_path):
    root = write_folder(tmp_path / "toy", {"train": 12, "test": 6})
    parts = {}
    for in_memory in (True, False):
        dm = ImageFolderDataModule(
            root=str(root),
            seed=0,
            in_memory=in_memory,
            held_out_classes=[1],
            batch_size=2,
            num_workers=0,
        )
        dm.setup()
        parts[in_memory] = (HeldOutClasses().load(dm, "val"), HeldOutClasses().load(dm, "test"))
    for memory, streamed in zip(parts[True], parts[False], strict=True):
        assert torch.equal(memory, streamed)
    val, test = parts[True]
    assert sorted(values(val)) == [11, 14, 17, 20]  # class b: files 1, 4, 7, 10
    assert sorted(values(test)) == [151, 154]


# ---------------------------------------------------------------------------- noise
@pytest.mark.parametrize("kind", SyntheticNoise.KINDS)
def test_noise_is_deterministic_and_shaped_like_the_data(kind):
    data = model_input(3, 32)
    ood = SyntheticNoise(kind=kind, count=40, seed=3)
    test = ood.load(data, "test")
    assert test.shape == (40, 3, 32, 32) and test.dtype == torch.uint8 and ood.group == "far"
    assert torch.equal(test, SyntheticNoise(kind=kind, count=40, seed=3).load(data, "test"))
    assert not torch.equal(test, SyntheticNoise(kind=kind, count=40, seed=4).load(data, "test"))
    val = ood.load(data, "val")
    assert val.shape == test.shape and not row_keys(val) & row_keys(test)
    assert SyntheticNoise(kind=kind, count=5).load(model_input(1, 8), "test").shape == (5, 1, 8, 8)


def test_noise_kinds_have_their_statistics():
    data = model_input(3, 32)
    gaussian = SyntheticNoise(kind="gaussian", count=200).load(data, "test").float() / 255
    assert gaussian.mean().item() == pytest.approx(0.5, abs=0.01)
    assert gaussian.std().item() == pytest.approx(0.24, abs=0.005)  # 0.25, clipped at 2σ
    uniform = SyntheticNoise(kind="uniform", count=200).load(data, "test").float() / 255
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    assert uniform.std().item() == pytest.approx(12**-0.5, abs=0.01)
    blobs = SyntheticNoise(kind="blobs", count=200).load(data, "test")
    assert ((blobs == 0) | (blobs >= 191)).all()  # 0 below the 0.75 threshold
    assert 0.1 < (blobs > 0).float().mean().item() < 0.9
    assert SyntheticNoise(count=5, val_count=0).load(data, "val") is None


# ------------------------------------------------------------------------ image folders
def test_image_folder_test_from_test_split_val_from_train(tmp_path):
    root = write_folder(tmp_path / "ood", {"train": 10, "test": 8})
    ood = ImageFolderSet(root=str(root), count=5, val_count=4, seed=0)
    test, val = ood.load(model_input(1, 8), "test"), ood.load(model_input(1, 8), "val")
    assert test.shape == (5, 1, 8, 8) and val.shape == (4, 1, 8, 8)
    assert set(values(test)) <= {150 + i for i in range(8)}
    assert set(values(val)) <= {10 + i for i in range(10)}
    again = ImageFolderSet(root=str(root), count=5, val_count=4, seed=0)
    assert torch.equal(again.load(model_input(1, 8), "test"), test)
    other = ImageFolderSet(root=str(root), count=5, val_count=4, seed=1)
    assert not torch.equal(other.load(model_input(1, 8), "test"), test)
    train_as_test = ImageFolderSet(root=str(root), split="training", count=None, val_count=None)
    assert sorted(values(train_as_test.load(model_input(3, 10), "test"))) == list(range(10, 20))


def test_flat_image_folder_val_is_the_rest_and_archives_read_the_same(tmp_path):
    root = write_folder(tmp_path / "flat", {"flat": 9})
    ood = ImageFolderSet(root=str(root), count=6, val_count=None)
    test, val = ood.load(model_input(3, 10), "test"), ood.load(model_input(3, 10), "val")
    assert sorted(values(test) + values(val)) == list(range(10, 19))
    whole = ImageFolderSet(root=str(root), count=None)
    assert whole.load(model_input(3, 10), "val") is None
    archive = tmp_path / "flat.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="flat")
    packed = ImageFolderSet(
        root=str(archive), count=6, val_count=None, cache_dir=str(tmp_path / "c")
    )
    assert torch.equal(packed.load(model_input(3, 10), "test"), test)
    assert list((tmp_path / "c").glob("flat-*.pt"))  # decoded once, cached


def test_image_folder_needs_image_size_for_mixed_sizes(tmp_path):
    for name, size in (("a", (10, 12)), ("b", (7, 7))):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(
            tmp_path / "mixed" / name / "0.png"
        )
    with pytest.raises(ValueError, match=r"OOD set mixed.*image_size"):
        ImageFolderSet(root=str(tmp_path / "mixed"), count=None).load(model_input(3, 8), "test")
    resized = ImageFolderSet(root=str(tmp_path / "mixed"), count=None, image_size=[6, 5])
    assert resized.load(model_input(3, 6), "test").shape == (2, 3, 6, 6)


def test_missing_archive_names_the_path_and_the_fixes(tmp_path):
    missing = tmp_path / "nowhere" / "mnist-png.tar.gz"
    ood = ImageFolderSet(root=str(missing), channels=1, name="mnist")
    with pytest.raises(FileNotFoundError) as error:
        ood.load(model_input(3, 32), "test")
    message = str(error.value)
    assert str(missing) in message and "paths.data_dir" in message
    assert "eval.ood.sets.mnist=null" in message


@pytest.mark.slow  # decodes the 70,000 PNGs once (about 7 s)
@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="shared MNIST archive not present")
def test_real_mnist_archive_as_far_ood_for_cifar(tmp_path, caplog):
    ood = ImageFolderSet(
        root=str(SHARED_MNIST),
        channels=1,
        count=300,
        val_count=200,
        cache_dir=str(tmp_path),
        name="mnist",
    )
    with caplog.at_level(logging.INFO, logger="sweeplab.data.ood_sets"):
        test, val = ood.load(model_input(3, 32), "test"), ood.load(model_input(3, 32), "val")
    assert test.shape == (300, 3, 32, 32) and val.shape == (200, 3, 32, 32)
    assert torch.equal(test[:, 0], test[:, 2]) and "OOD set mnist" in caplog.text
    assert 0.1 < test.float().mean().item() / 255 < 0.2  # dark digits on black


# ---------------------------------------------------------------------------- torchvision
def test_torchvision_set_samples_test_and_train_pools(monkeypatch, tmp_path):
    def fake_split(spec, root, train, download):
        assert spec.class_name == "SVHN" and root == tmp_path and not download
        base, count = (10, 30) if train else (150, 20)
        images = (base + torch.arange(count, dtype=torch.uint8))[:, None, None, None]
        return images.expand(count, 3, 32, 32), torch.zeros(count, dtype=torch.long), []

    monkeypatch.setattr(ood_sets_module, "load_torchvision_split", fake_split)
    ood = TorchvisionSet(dataset="svhn", root=str(tmp_path / "x.tar.gz"), count=8, val_count=5)
    test, val = ood.load(model_input(3, 32), "test"), ood.load(model_input(3, 32), "val")
    assert len(test) == 8 and set(values(test)) <= set(range(150, 170))
    assert len(val) == 5 and set(values(val)) <= set(range(10, 40))


def test_torchvision_set_without_files_says_what_to_do(tmp_path):
    ood = TorchvisionSet(dataset="cifar100", root=str(tmp_path), name="cifar100")
    with pytest.raises(FileNotFoundError, match=r"CIFAR100.*paths\.data_dir.*sets\.cifar100=null"):
        ood.load(model_input(3, 32), "test")


# -------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "path", sorted((CONF / "eval" / "ood_sets").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_ood_list_instantiates(path, tmp_path):
    cfg = OmegaConf.create(
        {
            "paths": {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
            "sets": OmegaConf.load(path),
        }
    )
    assert len(cfg.sets) >= 1
    for name, node in cfg.sets.items():
        ood = instantiate(node)
        assert isinstance(ood, OODSet) and ood.group in GROUPS, name
        root = getattr(ood, "root", None)
        assert root is None or str(root).startswith(str(tmp_path / "data")), name


def test_there_is_a_list_per_data_option_and_the_openood_lists():
    lists = {p.stem for p in (CONF / "eval" / "ood_sets").glob("*.yaml")}
    options = {p.stem for p in (CONF / "data").glob("*.yaml")}
    assert lists == options | {"cifar10_openood", "cifar100_openood"}
    openood = {
        name: {
            key: node.group
            for key, node in OmegaConf.load(
                CONF / "eval" / "ood_sets" / f"{name}_openood.yaml"
            ).items()
        }
        for name in ("cifar10", "cifar100")
    }
    far = {"mnist": "far", "svhn": "far", "textures": "far", "places365": "far"}
    assert openood["cifar10"] == {"cifar100": "near", "tin": "near", **far}
    assert openood["cifar100"] == {"cifar10": "near", "tin": "near", **far}


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_held_out_sets_only_where_the_data_holds_classes_out(option):
    lists = OmegaConf.load(CONF / "eval" / "ood_sets" / f"{option}.yaml")
    uses_held_out = any(node._target_.endswith(".HeldOutClasses") for node in lists.values())
    held_out_classes = compose_config([f"data={option}"]).data.held_out_classes
    assert uses_held_out == bool(held_out_classes)
