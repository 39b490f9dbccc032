"""Image folders (``<split>/<class>/<image>``) as directories or ``.tar.gz`` archives.

The layout is the one ``torchvision.datasets.ImageFolder`` reads, one level up: optional
leading directories shared by every image (``cifar10/``), then split directories named
``train``/``training`` and ``test``/``testing``, then one directory per class. A folder
without split directories (``<class>/<image>``) is a single train pool; the data module
carves a fixed test split from it. Classes are indexed in sorted name order and images
sorted by name within a class, as ``ImageFolder`` does, whatever order a tar stores them in.

Archives are streamed member by member and decoded once (``torchvision.io.decode_image``
with a forced GRAY or RGB mode), never unpacked to disk for the in-memory path.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from sweeplab.data.cache import cache_file, load_or_build
from sweeplab.disk_faults import ARCHIVE_READ_ERRORS, CorruptArchiveError

SPLIT_DIR_NAMES = {"train": "train", "training": "train", "test": "test", "testing": "test"}
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff",
)  # fmt: skip
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CODEC_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def missing_root_error(root: Path) -> FileNotFoundError:
    """Say where the data was looked for and the two ways to point at it."""
    return FileNotFoundError(
        f"data.root: no image folder or archive at {root}. Point paths.data_dir at the folder "
        f"that holds {root.name!r} (e.g. `paths.data_dir=../shared/data`) or set "
        f"`data.root=/path/to/{root.name}`."
    )


def _path_parts(path: str) -> tuple[str, ...]:
    """Components of a POSIX path, without empty and ``.`` parts (tars list ``./a/b``)."""
    return tuple(part for part in path.split("/") if part not in ("", "."))


def is_image_path(path: str) -> bool:
    """An image by extension, outside hidden files and folders (``.DS_Store``, ``._x.jpg``)."""
    parts = _path_parts(path)
    return (
        bool(parts)
        and not any(part.startswith(".") for part in parts)
        and parts[-1].lower().endswith(IMAGE_EXTENSIONS)
    )


@dataclass(frozen=True)
class ImageEntry:
    """One image file of the folder: where it is and what it is."""

    path: str  # as listed: archive member name, or path relative to the folder
    split: str  # "train" or "test"
    label: int
    file_name: str


@dataclass(frozen=True)
class FolderLayout:
    """The structure found in a listing of image paths."""

    prefix: tuple[str, ...]  # leading directories shared by every image
    split_dirs: dict[str, str]  # "train"/"test" → directory name; empty for a flat folder
    class_names: list[str]
    entries: list[ImageEntry]  # sorted by split, label, file name

    @property
    def has_test_split(self) -> bool:
        return "test" in self.split_dirs

    def split_directory(self, root: Path, split: str) -> Path:
        """The directory holding ``split``'s class folders, under an unpacked ``root``."""
        return root.joinpath(*self.prefix, *([self.split_dirs[split]] if self.split_dirs else []))


def resolve_layout(paths: list[str], where: str) -> FolderLayout:
    """Find the split and class of every image path, or explain what layout was expected."""
    image_paths = [p for p in paths if is_image_path(p)]
    if not image_paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {where}")
    parts = [_path_parts(p) for p in image_paths]

    prefix: list[str] = []
    while True:
        depth = len(prefix)
        heads = {p[depth] if len(p) - depth >= 3 else None for p in parts}
        if len(heads) != 1 or None in heads or next(iter(heads)).lower() in SPLIT_DIR_NAMES:
            break
        prefix.append(next(iter(heads)))
    relative = [p[len(prefix) :] for p in parts]
    depths = {len(r) for r in relative}

    split_dirs: dict[str, str] = {}
    if depths == {3} and all(r[0].lower() in SPLIT_DIR_NAMES for r in relative):
        for directory in sorted({r[0] for r in relative}):
            split = SPLIT_DIR_NAMES[directory.lower()]
            if split in split_dirs:
                raise ValueError(
                    f"{where} has two {split} split directories: "
                    f"{split_dirs[split]!r} and {directory!r}"
                )
            split_dirs[split] = directory
        if "train" not in split_dirs:
            raise ValueError(f"{where} has a test split but no train/ or training/ directory")
        located = [(SPLIT_DIR_NAMES[r[0].lower()], r[1], r[2]) for r in relative]
    elif depths == {2}:
        located = [("train", r[0], r[1]) for r in relative]
    else:
        example = next(p for p, r in zip(image_paths, relative, strict=True) if len(r) != 3)
        raise ValueError(
            f"{where} is not an image folder: expected [<top>/]<split>/<class>/<image> with "
            f"split directories train|training and test|testing, or [<top>/]<class>/<image>; "
            f"found for example {example!r}"
        )

    class_names = sorted({cls for split, cls, _ in located if split == "train"})
    unknown = sorted({cls for split, cls, _ in located if split == "test"} - set(class_names))
    if unknown:
        raise ValueError(f"{where}: test classes {unknown} have no training images")
    index = {name: i for i, name in enumerate(class_names)}
    entries = sorted(
        (
            ImageEntry(path, split, index[cls], file_name)
            for path, (split, cls, file_name) in zip(image_paths, located, strict=True)
        ),
        key=lambda e: (e.split != "train", e.label, e.file_name),
    )
    return FolderLayout(tuple(prefix), split_dirs, class_names, entries)


@contextmanager
def quiet_codec_deprecation() -> Iterator[None]:
    """Silence torchvision 0.29's per-call notice that its image codecs are deprecated.

    The codecs still work; the notice, raised for every one of 60,000 images, would cost
    time and bury the warnings that matter.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CODEC_DEPRECATION, category=DeprecationWarning)
        yield


def decode_image_bytes(data: bytes, channels: int, name: str = "image") -> Tensor:
    """Decode to uint8 ``[C, H, W]`` with ``C = channels`` (1: grayscale, 3: RGB)."""
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels}")
    try:
        return decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8),
            mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB,
        )
    except RuntimeError:  # a format torchvision.io does not decode (BMP, TIFF, PPM, …)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return TF.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
        except Exception as error:
            raise ValueError(f"cannot decode {name}: {error}") from error


def resize_image(image: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Resize uint8 ``[C, H, W]`` to ``size`` (antialiased bilinear); ``None`` keeps it."""
    if size is None or tuple(image.shape[-2:]) == size:
        return image
    return TF.resize(image, list(size), antialias=True)


def _iter_files(root: Path) -> Iterator[tuple[str, bytes]]:
    """``(relative path, bytes)`` of every image file, streamed from a tar or a directory."""
    if root.is_dir():
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                relative = Path(directory, name).relative_to(root).as_posix()
                if is_image_path(relative):
                    yield relative, Path(directory, name).read_bytes()
        return
    if not is_archive(root):
        raise ValueError(
            f"data.root must be an image folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive, "
            f"got {root}"
        )
    try:
        with (
            _open_tar_bytes(root) as stream,
            tarfile.open(fileobj=stream, mode="r|") as archive,  # a stream: no seeks back
        ):
            for member in archive:
                if member.isfile() and is_image_path(member.name):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name, handle.read()
            while stream.read(1 << 20):  # to the end, where a cut or damaged stream shows
                pass
    except ARCHIVE_READ_ERRORS as error:
        raise CorruptArchiveError(root, error) from error


def _decompressor(path: Path):
    """``gzip.open``, ``bz2.open`` or ``lzma.open`` by the file's magic bytes; ``None``: a plain tar."""
    with open(path, "rb") as raw:
        magic = raw.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open
    if magic.startswith(b"BZh"):
        return bz2.open
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open
    return None


def _open_tar_bytes(path: Path) -> BinaryIO:
    """The archive's tar bytes, through a reader that checks where the compressed stream
    ends and its checksum: tarfile's own stream reader stops quietly at a cut between two
    members, so a truncated download would load as a smaller data set."""
    opener = _decompressor(path)
    return opener(path, "rb") if opener is not None else open(path, "rb")


def _check_compressed_stream(path: Path) -> None:
    """Read a compressed archive to its end, raising if it is cut short or damaged."""
    if _decompressor(path) is None:
        return
    with _open_tar_bytes(path) as stream:
        while stream.read(1 << 20):
            pass


def decode_image_folder(
    root: Path, channels: int, image_size: tuple[int, int] | None
) -> dict[str, Any]:
    """Decode every image of ``root`` once into the cache payload (see :func:`validate_payload`)."""
    decoded: dict[str, Tensor] = {}
    with quiet_codec_deprecation():
        for path, data in _iter_files(root):
            decoded[path] = resize_image(decode_image_bytes(data, channels, path), image_size)
    layout = resolve_layout(list(decoded), str(root))
    shapes = {tuple(image.shape) for image in decoded.values()}
    if len(shapes) > 1:
        raise ValueError(
            f"data.image_size must be set: the images in {root} differ in size "
            f"(found {sorted(shapes)[:3]}…)"
        )

    def stack(split: str) -> tuple[Tensor | None, Tensor | None]:
        entries = [e for e in layout.entries if e.split == split]
        if not entries:
            return None, None
        images = torch.stack([decoded[e.path] for e in entries])
        return images, torch.tensor([e.label for e in entries], dtype=torch.long)

    train_images, train_labels = stack("train")
    test_images, test_labels = stack("test")
    return {
        "class_names": layout.class_names,
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def validate_payload(payload: dict[str, Any], channels: int) -> None:
    """Raise unless ``payload`` holds consistent uint8 images and in-range int64 labels."""
    class_names = payload["class_names"]
    if not (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)):
        raise TypeError("class_names must be a list of strings")
    for split in ("train", "test"):
        images, labels = payload[f"{split}_images"], payload[f"{split}_labels"]
        if split == "test" and images is None and labels is None:
            continue
        if not (isinstance(images, Tensor) and isinstance(labels, Tensor)):
            raise TypeError(f"{split} images and labels must be tensors")
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != channels:
            raise ValueError(
                f"{split} images must be uint8 [N, {channels}, H, W], "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.long or labels.shape != images.shape[:1]:
            raise ValueError(f"{split} labels must be int64 [{images.shape[0]}]")
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(class_names):
            raise ValueError(f"{split} labels out of range for {len(class_names)} classes")


def load_image_folder(
    root: Path,
    *,
    channels: int,
    image_size: tuple[int, int] | None,
    cache_dir: str | os.PathLike | None,
) -> dict[str, Any]:
    """Decoded arrays of the image folder at ``root``, from the cache when it is current."""
    options = f"channels={channels}|image_size={image_size}"
    path = cache_file(cache_dir, root, options) if cache_dir is not None else None
    return load_or_build(
        path,
        build=lambda: decode_image_folder(root, channels, image_size),
        validate=lambda payload: validate_payload(payload, channels),
    )


def unpack_archive(archive: Path, cache_dir: str | os.PathLike) -> Path:
    """Unpack ``archive`` once under ``cache_dir`` (atomically) and return the directory."""
    target = cache_file(cache_dir, archive, "unpacked").with_suffix("")
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _check_compressed_stream(archive)
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
        os.replace(staging, target)
    except ARCHIVE_READ_ERRORS as error:  # before OSError: a bad gzip is an OSError too
        raise CorruptArchiveError(archive, error) from error
    except OSError:
        if not target.is_dir():  # a real failure, not another process winning the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def list_image_paths(root: Path) -> list[str]:
    """Paths of every image file under ``root``, relative to it (POSIX separators)."""
    return [
        Path(directory, name).relative_to(root).as_posix()
        for directory, _, files in os.walk(root)
        for name in files
        if is_image_path(Path(directory, name).relative_to(root).as_posix())
    ]
