"""Data layer: splits, batching, augmentation, decoding and caching, all on the CPU.

Facts checked by hand (pixel values, split sizes, class order) and invariants (coverage,
disjointness, determinism). Nothing is downloaded: torchvision classes are replaced by tiny
fakes and archives are built in ``tmp_path``.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from sweeplab.data import (
    BenchmarkDataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    InMemoryDataModule,
    SyntheticDataModule,
    folder_archives,
)
from sweeplab.data.cache import CorruptCacheWarning
from sweeplab.data.loaders import EpochBatchPlan, epoch_permutation
from sweeplab.data.splits import plan_splits, stratified_split
from sweeplab.data.transforms import horizontal_flip, random_crop

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-png.tar.gz"


# ----------------------------------------------------------------------------- helpers
def synthetic(**overrides) -> SyntheticDataModule:
    kwargs = {"seed": 0, "batch_size": 16, "drop_last": False} | overrides
    dm = SyntheticDataModule(**kwargs)
    dm.setup()
    return dm


def row_keys(images: torch.Tensor) -> list[bytes]:
    """One hashable key per image, to compare splits by content."""
    return [row.numpy().tobytes() for row in images.flatten(1)]


def attach_epoch(dm: InMemoryDataModule, epoch: int) -> None:
    """Stand in for a trainer at ``epoch`` (what a resumed run's trainer reports)."""
    dm.trainer = SimpleNamespace(current_epoch=epoch, training=True, overfit_batches=0)


def epoch_batches(dm: InMemoryDataModule, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    attach_epoch(dm, epoch)
    return list(dm.train_dataloader())


def pixel_value(split: str, class_index: int, image_index: int) -> tuple[int, int, int]:
    """A distinct RGB colour per image, so decoded pixels identify their file."""
    return (40 * class_index + image_index, 100 + (split == "test") * 50, 7)


def write_image_folder(
    root: Path,
    splits: dict[str, dict[str, int]],
    size: tuple[int, int] = (6, 5),
    top: str = "toy",
) -> Path:
    """PNG files ``root/top/<split>/<class>/<i>.png`` of solid colours; returns ``root/top``."""
    for split, classes in splits.items():
        for class_index, (class_name, count) in enumerate(sorted(classes.items())):
            folder = root / top / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = pixel_value(
                    "test" if split.startswith("test") else "train", class_index, i
                )
                array = np.empty((*size, 3), dtype=np.uint8)
                array[...] = colour
                Image.fromarray(array).save(folder / f"{i}.png")
    return root / top


def make_archive(folder: Path, archive: Path, extra_members: dict[str, bytes] | None = None):
    """Pack ``folder`` as ``<folder.name>/…`` in a .tar.gz, members in reverse order."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*"), reverse=True):  # order must not matter
            tar.add(path, arcname=f"./{folder.name}/{path.relative_to(folder)}", recursive=False)
        for name, data in (extra_members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def toy_archive(tmp_path: Path) -> Path:
    """Two classes named so that sorting matters (``dog`` listed first, ``cat`` sorts first)."""
    folder = write_image_folder(
        tmp_path / "src",
        {"train": {"dog": 6, "cat": 5}, "test": {"dog": 3, "cat": 2}},
    )
    return make_archive(
        folder,
        tmp_path / "toy.tar.gz",
        extra_members={"toy/train/cat/._0.png": b"not an image", "toy/README.txt": b"hi"},
    )


# -------------------------------------------------------------------- shapes and sizes
def test_digits_shapes_values_and_fixed_test_split():
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(seed=0)
    dm.setup()
    assert dm.name == "digits" and dm.num_classes == 10 and dm.image_shape == (1, 8, 8)
    assert dm.class_names == [str(d) for d in range(10)]
    sizes = {}
    for split in ("train", "val", "test"):
        x, y = dm.split(split)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8)
        sizes[split] = len(y)
    # A stratified 20% is test (round(359.4) = 359, each class within one of 20%),
    # then 10% of the remaining 1438 is val.
    class_counts = np.bincount(load_digits().target)
    test_counts = np.bincount(dm.split("test")[1].numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * class_counts) < 1)
    assert (sizes["test"], sizes["val"], sizes["train"]) == (359, 144, 1294)
    # Pixel values are round(v * 255 / 16): 0 → 0, 16 → 255, 8 → 128.
    raw = load_digits().images
    all_images = torch.cat([dm.split(s)[0] for s in ("train", "val", "test")])
    expected = np.round(raw * 255 / 16).astype(np.uint8)[:, None]
    assert sorted(row_keys(all_images)) == sorted(row_keys(torch.from_numpy(expected)))
    # The test split does not depend on the run seed.
    other = DigitsDataModule(seed=123)
    other.setup()
    assert torch.equal(dm.split("test")[0], other.split("test")[0])
    assert torch.equal(dm.split("test")[1], other.split("test")[1])
    assert not torch.equal(dm.split("val")[1], other.split("val")[1])


def test_synthetic_shapes_and_learnable_structure():
    dm = synthetic(num_train=120, num_test=40, num_classes=3, image_size=[5, 7], channels=3,
                   mean=[0.5] * 3, std=[0.3] * 3)  # fmt: skip
    assert dm.num_classes == 3 and dm.image_shape == (3, 5, 7)
    x, y = dm.split("train")
    assert x.dtype == torch.uint8 and x.shape == (108, 3, 5, 7) and y.dtype == torch.int64
    assert dm.split("test")[0].shape == (40, 3, 5, 7)
    # The task is learnable: nearest class mean (fitted on train) classifies test well.
    means = torch.stack([x[y == k].float().mean(0) for k in range(3)])
    x_test, y_test = dm.split("test")
    distances = ((x_test.float()[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (distances.argmin(1) == y_test).float().mean() > 0.9
    # Images depend on data_seed only, not on the run seed.
    assert torch.equal(synthetic(seed=5).split("test")[0], synthetic(seed=9).split("test")[0])


# ----------------------------------------------------------------------------- splits
def test_stratified_split_counts_and_determinism():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    rest, carved = stratified_split(labels, 0.2, seed=3)
    assert torch.bincount(labels[carved]).tolist() == [2, 4, 1]
    assert sorted(rest.tolist() + carved.tolist()) == list(range(35))
    again_rest, again_carved = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(carved, again_carved) and torch.equal(rest, again_rest)
    assert not torch.equal(stratified_split(labels, 0.2, seed=4)[1], carved)


def test_plan_splits_indices_are_disjoint_and_cover_the_pool():
    labels = torch.arange(100) % 5
    plan = plan_splits(labels, None, num_classes=5, seed=1, val_fraction=0.1)
    parts = [plan.train.indices, plan.val.indices, plan.test.indices]
    assert all(part.pool == "train" for part in (plan.train, plan.val, plan.test))
    assert sorted(torch.cat(parts).tolist()) == list(range(100))
    # 16 per class left: 1.6 val each, 8 in all; the three lowest labels round up.
    assert [len(p) for p in parts] == [72, 8, 20]
    assert torch.bincount(labels[plan.val.indices]).tolist() == [2, 2, 2, 1, 1]


def test_val_split_is_deterministic_per_seed_and_disjoint():
    a, b, c = synthetic(seed=0), synthetic(seed=0), synthetic(seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0])
    assert set(row_keys(a.split("val")[0])) != set(row_keys(c.split("val")[0]))
    keys = {split: row_keys(a.split(split)[0]) for split in ("train", "val", "test")}
    assert all(len(set(k)) == len(k) for k in keys.values())  # no duplicates to hide overlap
    assert not set(keys["train"]) & set(keys["val"])
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["val"]) & set(keys["test"])
    # Val is carved per class: 10% of each of the 4 classes of 64, 26 in all.
    assert torch.bincount(a.split("val")[1]).tolist() == [7, 7, 6, 6]


def test_train_subset_is_a_seeded_subset_of_train():
    full, sub = synthetic(seed=2), synthetic(seed=2, train_subset=50)
    assert len(sub.split("train")[1]) == 50
    assert set(row_keys(sub.split("train")[0])) <= set(row_keys(full.split("train")[0]))
    assert torch.equal(sub.split("val")[0], full.split("val")[0])  # val unaffected
    assert torch.equal(sub.split("train")[0], synthetic(seed=2, train_subset=50).split("train")[0])
    with pytest.raises(ValueError, match=r"data\.train_subset"):
        synthetic(train_subset=10_000)


def test_held_out_classes_are_removed_relabelled_and_kept_as_near_ood():
    full = synthetic(seed=0)
    held = synthetic(seed=0, held_out_classes=[3, 1])
    assert held.num_classes == 2 and held.class_names == ["class_0", "class_2"]
    remap = {0: 0, 2: 1}
    for split in ("train", "val", "test"):
        x_full, y_full = full.split(split)
        keep = (y_full == 0) | (y_full == 2)
        x, y = held.split(split)
        assert torch.equal(x, x_full[keep])  # same samples, same order
        assert y.tolist() == [remap[v] for v in y_full[keep].tolist()]
        assert set(y.tolist()) == {0, 1}
    x_ood, y_ood = held.held_out
    x_test, y_test = full.split("test")
    is_held = (y_test == 1) | (y_test == 3)
    assert torch.equal(x_ood, x_test[is_held]) and torch.equal(y_ood, y_test[is_held])
    assert full.held_out is None


# ---------------------------------------------------------------------------- loaders
def test_train_loader_covers_every_sample_once_per_epoch():
    dm = synthetic(batch_size=10)
    x, y = dm.split("train")
    batches = epoch_batches(dm, 0)
    assert len(batches) == len(dm.train_dataloader()) == 23  # ceil(230 / 10)
    seen = torch.cat([bx for bx, _ in batches])
    assert sorted(row_keys(seen)) == sorted(row_keys(x))
    assert all(bx.dtype == torch.uint8 and by.dtype == torch.int64 for bx, by in batches)
    # The order is the documented permutation of seed * 1_000_003 + epoch.
    expected_first = x[epoch_permutation(len(y), seed=0, epoch=0)[:10]]
    assert torch.equal(batches[0][0], expected_first)


def test_train_order_depends_only_on_seed_and_epoch():
    dm = synthetic(batch_size=32)
    first = [by for _, by in epoch_batches(dm, 3)]
    resumed = synthetic(batch_size=32)  # a fresh process resumed at epoch 3
    assert all(
        torch.equal(a, b)
        for a, b in zip(first, [by for _, by in epoch_batches(resumed, 3)], strict=True)
    )
    other = [by for _, by in epoch_batches(dm, 4)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # Without a trainer each pass is the next epoch of an internal counter.
    standalone = synthetic(batch_size=32)
    pass0, pass1 = list(standalone.train_dataloader()), list(standalone.train_dataloader())
    assert torch.equal(pass0[0][1], epoch_batches(dm, 0)[0][1])
    assert torch.equal(pass1[0][1], epoch_batches(dm, 1)[0][1])


def test_iter_without_next_does_not_consume_an_epoch():
    dm = synthetic(batch_size=32)
    loader = dm.train_dataloader()
    iter(loader)  # Lightning does this once to check that a loader is iterable
    assert torch.equal(next(iter(loader))[1], epoch_batches(synthetic(batch_size=32), 0)[0][1])


def test_overfitting_trainer_gets_the_same_batches_every_epoch():
    dm = synthetic(batch_size=32)
    orders = []
    for epoch in (0, 1):
        dm.trainer = SimpleNamespace(current_epoch=epoch, training=True, overfit_batches=3)
        orders.append(torch.cat([by for _, by in dm.train_dataloader()]))
    assert torch.equal(orders[0], orders[1]) and torch.equal(orders[0], dm.split("train")[1])


def test_drop_last_yields_full_batches_only():
    dm = synthetic(batch_size=50, drop_last=True)
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 4  # 230 // 50
    assert all(len(by) == 50 for _, by in batches)
    with pytest.raises(ValueError, match=r"data\.batch_size"):
        synthetic(batch_size=1000, drop_last=True).train_dataloader()


def test_eval_loader_yields_all_samples_in_order():
    dm = synthetic(eval_batch_size=50)
    x, y = dm.split("test")
    loader = dm.loader("test")
    batches = list(loader)
    assert len(loader) == 3 and [len(by) for _, by in batches] == [50, 50, 28]
    assert torch.equal(torch.cat([bx for bx, _ in batches]), x)
    assert torch.equal(torch.cat([by for _, by in batches]), y)
    assert torch.equal(torch.cat([by for _, by in dm.val_dataloader()]), dm.split("val")[1])


@pytest.mark.parametrize("drop_last", [True, False])
def test_train_loader_shards_across_ranks_with_equal_batch_counts(monkeypatch, drop_last):
    world_size, num_samples = 3, 232
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: world_size)
    shards, lengths = [], []
    for rank in range(world_size):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, r=rank: r)
        plan = EpochBatchPlan(num_samples, 10, shuffle=True, drop_last=drop_last, seed=4)
        batches = plan.batches(2)
        assert len(batches) == len(plan)
        lengths.append(len(plan))
        shards.append(torch.cat(batches).tolist())
    assert len(set(lengths)) == 1
    permutation = epoch_permutation(num_samples, seed=4, epoch=2).tolist()
    if drop_last:  # 77 per rank, 7 full batches of 10: disjoint shards of one permutation
        assert lengths[0] == 7
        flat = [i for shard in shards for i in shard]
        assert len(set(flat)) == len(flat) == 210
        assert shards[1][:3] == permutation[1:9:3]
    else:  # 78 per rank: wrapped around like DistributedSampler, every sample seen
        assert lengths[0] == 8
        assert set().union(*map(set, shards)) == set(range(num_samples))
    # Evaluation is never sharded.
    dm = synthetic()
    assert len(torch.cat([by for _, by in dm.loader("test")])) == 128


# -------------------------------------------------------------------------- transforms
def test_preprocess_normalises_like_a_hand_computation():
    dm = synthetic(channels=2, mean=[0.5, 0.25], std=[0.5, 0.125])
    x = torch.tensor([0, 51, 255, 128], dtype=torch.uint8).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    out = dm.preprocess(x, train=False)
    assert out.dtype == torch.float32
    expected_c0 = [(v / 255 - 0.5) / 0.5 for v in (0, 51, 255, 128)]
    expected_c1 = [(v / 255 - 0.25) / 0.125 for v in (0, 51, 255, 128)]
    assert torch.allclose(out[0, 0].flatten(), torch.tensor(expected_c0), atol=1e-6)
    assert torch.allclose(out[0, 1].flatten(), torch.tensor(expected_c1), atol=1e-6)


def test_random_crop_matches_a_manual_crop():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    padding = 2
    offsets = torch.tensor([[0, 0], [2, 3]])
    out = random_crop(x, offsets, padding)
    assert out.shape == x.shape
    # Offset (0, 0): content moves 2 down and 2 right, zeros enter top and left.
    assert torch.equal(out[0, :, 2:, 2:], x[0, :, :-2, :-2])
    assert out[0, :, :2].eq(0).all() and out[0, :, :, :2].eq(0).all()
    # Offset (2, 3): no vertical shift, one pixel left; a zero column enters on the right.
    padded = torch.nn.functional.pad(x[1], (2, 2, 2, 2))
    assert torch.equal(out[1], padded[:, 2:6, 3:8])
    assert torch.equal(out[1, :, :, :4], x[1, :, :, 1:]) and out[1, :, :, 4].eq(0).all()
    assert torch.equal(random_crop(x, torch.full((2, 2), padding), padding), x)


def test_horizontal_flip_flips_only_the_flagged_samples():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).view(2, 1, 2, 3)
    out = horizontal_flip(x, torch.tensor([True, False]))
    assert out[0, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert torch.equal(out[1], x[1])


def test_train_augmentation_in_preprocess_is_crop_and_flip_of_the_input():
    padding = 2
    dm = synthetic(random_crop_padding=padding, horizontal_flip=True, mean=[0.0], std=[1.0])
    x = dm.split("train")[0][:64]
    attach_epoch(dm, 0)
    next(iter(dm.train_dataloader()))  # starts epoch 0: seeds the augmentation stream
    out = (dm.preprocess(x, train=True) * 255).round().to(torch.uint8)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    flipped_count = 0
    for i in range(len(x)):
        crops = [
            (padded[i, :, r : r + 8, c : c + 8], flip)
            for r in range(2 * padding + 1)
            for c in range(2 * padding + 1)
            for flip in (False, True)
        ]
        matches = [
            flip for crop, flip in crops if torch.equal(crop.flip(-1) if flip else crop, out[i])
        ]
        assert matches, f"sample {i} is not a padded crop (+flip) of its input"
        flipped_count += all(matches)
    assert 0 < flipped_count < len(x)
    # Same epoch → same draws; train=False → no augmentation at all.
    attach_epoch(dm, 0)
    next(iter(dm.train_dataloader()))
    assert torch.equal((dm.preprocess(x, train=True) * 255).round().to(torch.uint8), out)
    assert torch.equal(dm.preprocess(x, train=False), x.float() / 255)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_is_device_independent():
    dm = synthetic(random_crop_padding=2, horizontal_flip=True)
    x = dm.split("train")[0][:64]
    outputs = []
    for device in ("cpu", "cuda"):
        attach_epoch(dm, 1)
        next(iter(dm.train_dataloader()))
        outputs.append(dm.preprocess(x.to(device), train=True).cpu())
    assert torch.allclose(outputs[0], outputs[1])


# -------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"eval_batch_size": -1}, "data.eval_batch_size"),
        ({"val_fraction": 0}, "data.val_fraction"),
        ({"val_fraction": 1.2}, "data.val_fraction"),
        ({"std": [0.0]}, "data.std"),
        ({"std": [-0.2]}, "data.std"),
        ({"mean": [0.5, 0.5]}, "data.mean"),
        ({"held_out_classes": [10]}, "data.held_out_classes"),
        ({"held_out_classes": [1, 1]}, "data.held_out_classes"),
        ({"held_out_classes": list(range(9))}, "data.held_out_classes"),
        ({"random_crop_padding": -1}, "data.random_crop_padding"),
        ({"train_subset": 0}, "data.train_subset"),
        ({"seed": -1}, "data.seed"),
        ({"horizontal_flip": "false"}, "data.horizontal_flip"),
    ],
)
def test_bad_values_raise_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        DigitsDataModule(**({"seed": 0} | overrides))


def test_bad_benchmark_options_raise_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source.*archive, torchvision"):
        BenchmarkDataModule(dataset="cifar10", root=str(tmp_path), source="web", seed=0)
    with pytest.raises(ValueError, match=r"data\.dataset"):
        BenchmarkDataModule(dataset="imagenet", root=str(tmp_path), seed=0)


# ----------------------------------------------------------------- archives and caches
def test_archive_is_decoded_with_sorted_classes_and_cached(toy_archive, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    dm = ImageFolderDataModule(root=str(toy_archive), seed=0, val_fraction=0.2,
                               cache_dir=str(cache_dir))  # fmt: skip
    dm.prepare_data()
    dm.setup()
    assert dm.class_names == ["cat", "dog"] and dm.image_shape == (3, 6, 5)
    x_test, y_test = dm.split("test")
    assert y_test.tolist() == [0, 0, 1, 1, 1]  # class-major, file names sorted
    for image, label, index in zip(x_test, y_test, [0, 1, 0, 1, 2], strict=True):
        assert image[:, 0, 0].tolist() == list(pixel_value("test", int(label), index))
        assert image.eq(image[:, :1, :1]).all()  # solid colour survived decoding
    train_val = torch.cat([dm.split("train")[1], dm.split("val")[1]])
    assert torch.bincount(train_val).tolist() == [5, 6]  # the ._0.png member was ignored
    cache_files = list(cache_dir.glob("toy-*.pt"))
    assert len(cache_files) == 1

    # A second data module loads the cache file instead of decoding.
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of loading the cache")

    monkeypatch.setattr(folder_archives, "decode_image_folder", no_decoding)
    cached = ImageFolderDataModule(root=str(toy_archive), seed=0, val_fraction=0.2,
                                   cache_dir=str(cache_dir))  # fmt: skip
    cached.setup()
    assert torch.equal(cached.split("test")[0], x_test)
    monkeypatch.undo()

    # A corrupt cache file is reported and rebuilt.
    cache_files[0].write_bytes(b"truncated garbage")
    rebuilt = ImageFolderDataModule(root=str(toy_archive), seed=0, val_fraction=0.2,
                                    cache_dir=str(cache_dir))  # fmt: skip
    with pytest.warns(CorruptCacheWarning, match="rebuilding"):
        rebuilt.setup()
    assert torch.equal(rebuilt.split("test")[0], x_test)
    assert torch.load(cache_files[0], weights_only=True)["class_names"] == ["cat", "dog"]

    # Replacing the archive (new mtime) gives a new cache entry.
    os.utime(toy_archive, (time.time() + 10, time.time() + 10))
    ImageFolderDataModule(root=str(toy_archive), seed=0, cache_dir=str(cache_dir)).setup()
    assert len(list(cache_dir.glob("toy-*.pt"))) == 2


def test_archive_with_training_testing_dirs_decodes_grayscale(tmp_path):
    folder = write_image_folder(
        tmp_path / "src", {"training": {"a": 4, "b": 4}, "testing": {"a": 2, "b": 2}}, top="gray"
    )
    dm = ImageFolderDataModule(root=str(folder), channels=1, seed=0, val_fraction=0.25)
    dm.setup()
    assert dm.image_shape == (1, 6, 5) and dm.num_classes == 2
    assert len(dm.split("test")[1]) == 4 and len(dm.split("val")[1]) == 2
    r, g, b = pixel_value("test", 0, 0)
    luma = dm.split("test")[0][0, 0, 0, 0].item()
    assert abs(luma - (0.299 * r + 0.587 * g + 0.114 * b)) <= 1.5


def test_folder_without_test_split_gets_a_fixed_carved_test_split(tmp_path):
    folder = tmp_path / "flat"
    for class_index, name in enumerate(["x", "y"]):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((4, 4, 3), 10 * class_index + i, np.uint8)).save(
                folder / name / f"{i:02d}.png"
            )
    tests = []
    for seed in (0, 1):
        dm = ImageFolderDataModule(root=str(folder), seed=seed, val_fraction=0.2)
        dm.setup()
        tests.append(dm.split("test")[0])
        assert torch.bincount(dm.split("test")[1]).tolist() == [2, 2]
        assert len(dm.split("train")[1]) + len(dm.split("val")[1]) == 16
    assert torch.equal(tests[0], tests[1])


def test_images_of_different_sizes_need_image_size(tmp_path):
    folder = write_image_folder(
        tmp_path / "a", {"train": {"c": 3, "d": 3}, "test": {"c": 1, "d": 1}}
    )
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "train" / "c" / "big.png")
    with pytest.raises(ValueError, match=r"data\.image_size"):
        ImageFolderDataModule(root=str(folder), seed=0).setup()
    dm = ImageFolderDataModule(root=str(folder), seed=0, image_size=[4, 3])
    dm.setup()
    assert dm.image_shape == (3, 4, 3) and dm.split("train")[0].shape[1:] == (3, 4, 3)


def test_missing_root_says_where_it_looked_and_how_to_fix_it(tmp_path):
    missing = tmp_path / "nowhere" / "mnist-png.tar.gz"
    dm = BenchmarkDataModule(dataset="mnist", root=str(missing), seed=0)
    with pytest.raises(FileNotFoundError) as error:
        dm.setup()
    message = str(error.value)
    assert str(missing) in message and "paths.data_dir" in message and "data.root" in message


def test_root_must_be_a_folder_or_a_tar_archive(tmp_path, toy_archive):
    not_an_archive = tmp_path / "images.zip"
    not_an_archive.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"data\.root must be an image folder"):
        ImageFolderDataModule(root=str(not_an_archive), seed=0).setup()
    streaming = ImageFolderDataModule(root=str(toy_archive), seed=0, in_memory=False)
    with pytest.raises(ValueError, match=r"data\.cache_dir"):
        streaming.setup()


def test_benchmark_archive_must_have_the_dataset_classes(toy_archive):
    dm = BenchmarkDataModule(dataset="cifar10", root=str(toy_archive), seed=0)
    with pytest.raises(ValueError, match="2 classes"):
        dm.setup()


# --------------------------------------------------------------------- torchvision source
class FakeCIFAR10:
    """CIFAR-style storage: ndarray NHWC and a list of targets."""

    calls: ClassVar[list[dict]] = []

    def __init__(self, root, train=True, download=False):
        FakeCIFAR10.calls.append({"root": root, "train": train, "download": download})
        n = 30 if train else 10
        self.data = np.zeros((n, 32, 32, 3), dtype=np.uint8)
        self.data[:, 1, 2, :] = [[i, 100, 200] for i in range(n)]
        self.targets = [i % 10 for i in range(n)]
        self.classes = [f"c{k}" for k in range(10)]


class FakeMNIST:
    """MNIST-style storage: tensor NHW and a tensor of targets."""

    def __init__(self, root, train=True, download=False):
        n = 40 if train else 20
        self.data = torch.zeros((n, 28, 28), dtype=torch.uint8)
        self.data[:, 3, 4] = torch.arange(n, dtype=torch.uint8)
        self.targets = torch.arange(n) % 10
        self.classes = [f"{k} - digit" for k in range(10)]


class FakeSVHN:
    """SVHN-style storage: ndarray NCHW, ``labels`` and a ``split`` argument."""

    def __init__(self, root, split="train", download=False):
        n = 30 if split == "train" else 10
        self.data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        self.data[:, 2, 5, 6] = np.arange(n)
        self.labels = np.arange(n) % 10


class FakeMissing:
    def __init__(self, root, train=True, download=False):
        raise RuntimeError(
            "Dataset not found or corrupted. You can use download=True to download it"
        )


@pytest.mark.parametrize(
    ("dataset", "attribute", "fake", "pixel"),
    [
        ("cifar10", "CIFAR10", FakeCIFAR10, (0, 1, 2)),
        ("mnist", "MNIST", FakeMNIST, (0, 3, 4)),
        ("fashion_mnist", "FashionMNIST", FakeMNIST, (0, 3, 4)),
        ("svhn", "SVHN", FakeSVHN, (2, 5, 6)),
    ],
)
def test_torchvision_source_converts_storage_to_uint8_nchw(
    monkeypatch, tmp_path, dataset, attribute, fake, pixel
):
    monkeypatch.setattr(torchvision.datasets, attribute, fake)
    FakeCIFAR10.calls.clear()
    dm = BenchmarkDataModule(dataset=dataset, root=str(tmp_path / "cifar10-jpg.tar.gz"),
                             source="torchvision", download=True, seed=0, val_fraction=0.5)  # fmt: skip
    dm.setup()
    channels = 1 if "mnist" in dataset else 3
    assert dm.image_shape == (channels, *((28, 28) if channels == 1 else (32, 32)))
    x, y = dm.split("test")
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    # Test samples keep their source order; the marked pixel holds the sample index.
    c, h, w = pixel
    assert x[:, c, h, w].tolist() == list(range(len(y)))
    assert y.tolist() == [i % 10 for i in range(len(y))]
    if dataset == "cifar10":
        assert dm.class_names == [f"c{k}" for k in range(10)]
        assert x[:, 1:, 1, 2].tolist() == [[100, 200]] * 10  # channels last → first
        # An archive path as root means its folder; download is passed through.
        assert {call["root"] for call in FakeCIFAR10.calls} == {str(tmp_path)}
        assert all(call["download"] for call in FakeCIFAR10.calls)
    if dataset == "svhn":
        assert dm.class_names == [str(k) for k in range(10)]


def test_torchvision_source_without_files_explains_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeMissing)
    dm = BenchmarkDataModule(dataset="cifar100", root=str(tmp_path), source="torchvision", seed=0)
    with pytest.raises(FileNotFoundError, match=r"data\.download=true"):
        dm.setup()


# --------------------------------------------------------------------------- streaming
def test_streaming_image_folder_matches_the_in_memory_path(toy_archive, tmp_path):
    kwargs = {"root": str(toy_archive), "seed": 3, "val_fraction": 0.2, "batch_size": 4,
              "eval_batch_size": 3, "drop_last": False, "cache_dir": str(tmp_path / "c")}  # fmt: skip
    memory = ImageFolderDataModule(in_memory=True, **kwargs)
    stream = ImageFolderDataModule(in_memory=False, num_workers=2, **kwargs)
    memory.setup()
    stream.setup()
    assert stream.class_names == memory.class_names and stream.image_shape == memory.image_shape
    for dm in (memory, stream):
        attach_epoch(dm, 1)
    stream_batches = list(stream.train_dataloader())
    memory_batches = list(memory.train_dataloader())
    assert len(stream_batches) == len(stream.train_dataloader()) == 3  # 9 train images
    assert [len(by) for _, by in stream_batches] == [4, 4, 1]
    for (sx, sy), (mx, my) in zip(stream_batches, memory_batches, strict=True):
        assert sx.dtype == torch.uint8 and sx.shape[1:] == (3, 6, 5)
        assert torch.equal(sx, mx) and torch.equal(sy, my)
    test_batches = list(stream.loader("test"))
    assert [len(by) for _, by in test_batches] == [3, 2]
    for split in ("train", "val", "test"):
        assert torch.equal(stream.split(split)[0], memory.split(split)[0])
    assert list((tmp_path / "c").glob("toy-*")), "the archive is unpacked under cache_dir"


def test_streaming_held_out_and_preprocess(tmp_path):
    folder = write_image_folder(
        tmp_path / "three", {"train": {"a": 4, "b": 4, "c": 4}, "test": {"a": 2, "b": 2, "c": 2}}
    )
    dm = ImageFolderDataModule(root=str(folder), seed=0, in_memory=False, held_out_classes=[1],
                               batch_size=2)  # fmt: skip
    dm.setup()
    assert dm.class_names == ["a", "c"]
    x_ood, y_ood = dm.held_out
    assert y_ood.tolist() == [1, 1] and x_ood.shape == (2, 3, 6, 5)
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.preprocess(x, train=True).dtype == torch.float32


# -------------------------------------------------------------------- configs and Lightning
@pytest.mark.parametrize("option", sorted(p.stem for p in CONF_DATA.glob("*.yaml")))
def test_every_data_option_instantiates(option, tmp_path):
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "paths": {"data_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache")},
            "data": OmegaConf.load(CONF_DATA / f"{option}.yaml"),
        }
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, InMemoryDataModule) and dm.name == option
    if option in ("digits", "synthetic"):
        dm.setup()
        x, _ = next(iter(dm.train_dataloader()))
        assert dm.preprocess(x, train=True).shape == x.shape


class _RecordingModule(pl.LightningModule):
    """A linear model that records what the trainer fed it."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(num_features, num_classes)
        self.train_labels: dict[int, list[torch.Tensor]] = {}
        self.val_inputs: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        assert x.dtype == torch.float32
        self.train_labels.setdefault(self.current_epoch, []).append(y.clone())
        return torch.nn.functional.cross_entropy(self.linear(x.flatten(1)), y)

    def validation_step(self, batch, batch_idx):
        self.val_inputs.append(batch[0].clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:.*LeafSpec")  # raised inside pytorch_lightning itself
def test_lightning_fit_uses_epoch_order_and_preprocesses_on_transfer(tmp_path):
    dm = SyntheticDataModule(seed=0, batch_size=64, random_crop_padding=1, horizontal_flip=True,
                             mean=[0.5], std=[0.35])  # fmt: skip
    dm.setup()
    model = _RecordingModule(64, dm.num_classes)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    reference = synthetic(batch_size=64, drop_last=True)
    for epoch in (0, 1):
        expected = [by for _, by in epoch_batches(reference, epoch)]
        assert [y.tolist() for y in model.train_labels[epoch]] == [y.tolist() for y in expected]
    x_val = dm.split("val")[0]
    assert torch.allclose(model.val_inputs[0], dm.preprocess(x_val, train=False))


# ---------------------------------------------------------------------- the real archive
@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="shared MNIST archive not present")
def test_real_mnist_archive(tmp_path):
    dm = BenchmarkDataModule(dataset="mnist", root=str(SHARED_MNIST), seed=0,
                             cache_dir=str(tmp_path))  # fmt: skip
    dm.prepare_data()
    dm.setup()
    assert dm.class_names == [str(d) for d in range(10)] and dm.image_shape == (1, 28, 28)
    sizes = [len(dm.split(s)[1]) for s in ("train", "val", "test")]
    assert sizes == [54_000, 6_000, 10_000]
    x = dm.split("train")[0].float() / 255
    assert abs(x.mean().item() - 0.1307) < 2e-3 and abs(x.std().item() - 0.3081) < 2e-3
