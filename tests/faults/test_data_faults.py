"""Corrupt archives and image folders that cannot train a classifier: the error names the
archive or folder and what to do, and a run that had started records it with the traceback."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from sweeplab.data.folder_archives import load_image_folder, unpack_archive
from sweeplab.data.imagefolder import ImageFolderDataModule
from sweeplab.data.ood_sets import ImageFolderSet
from sweeplab.disk_faults import CorruptArchiveError
from sweeplab.tracking.record import read_record
from sweeplab.train import _short_error
from tests.conftest import run_in_store

REMEDY = "delete it and download it again"
QUICK = ["trainer.max_epochs=1", "eval.plots=false"]


def png(value: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def mnist_like(archive: Path, classes: int = 10, per_class: int = 3) -> Path:
    """A tiny ``mnist/{training,testing}/<digit>/<n>.png`` archive, as the real one is laid out."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("training", "testing"):
            for digit in range(classes):
                for n in range(per_class):
                    data = png(20 * digit + n)
                    info = tarfile.TarInfo(f"mnist/{split}/{digit}/{n}.png")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return archive


def damage(archive: Path, how: str) -> Path:
    """``archive`` truncated, replaced by junk, or with a broken deflate stream."""
    data = archive.read_bytes()
    if how == "truncated":
        archive.write_bytes(data[: len(data) // 2])
    elif how == "not an archive":
        archive.write_bytes(b"<html>404 Not Found</html>\n" * 40)
    elif how == "bad deflate":
        archive.write_bytes(data[:10] + b"\xff" * 200)  # a gzip header, then no valid block
    elif how == "empty":
        archive.write_bytes(b"")
    return archive


DAMAGE = ("truncated", "not an archive", "bad deflate", "empty")


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_archive_is_named_with_the_remedy(tmp_path, how):
    archive = damage(mnist_like(tmp_path / "mnist-png.tar.gz"), how)
    with pytest.raises(CorruptArchiveError) as decoded:  # the in-memory path streams the tar
        load_image_folder(archive, channels=1, image_size=None, cache_dir=None)
    with pytest.raises(CorruptArchiveError) as unpacked:  # the streaming path unpacks it
        unpack_archive(archive, tmp_path / "cache")
    for error in (decoded.value, unpacked.value):
        message = str(error)
        assert message.startswith(f"{archive} is corrupt or truncated (") and REMEDY in message
        assert "\n" not in message
    assert not list((tmp_path / "cache").glob("mnist-png*"))  # nothing half-unpacked is kept


def test_a_run_on_a_truncated_archive_fails_and_records_why(tmp_path):
    data_dir = tmp_path / "data"
    archive = damage(mnist_like(data_dir / "mnist-png.tar.gz"), "truncated")
    outcome = run_in_store(tmp_path, [*QUICK, "data=mnist", f"paths.data_dir={data_dir}"])
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"{archive} is corrupt or truncated (")
    assert outcome.error.endswith(REMEDY)
    record = read_record(outcome.run_dir)
    assert record["status"] == "failed" and record["error"] == outcome.error
    assert "CorruptArchiveError" in record["traceback"] and "EOFError" in record["traceback"]


def test_a_corrupt_ood_archive_names_the_set_and_the_archive(tmp_path):
    archive = damage(mnist_like(tmp_path / "mnist-png.tar.gz"), "truncated")
    ood = ImageFolderSet(root=str(archive), name="mnist", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CorruptArchiveError) as error:
        ood.load(SimpleNamespace(image_shape=(3, 8, 8)), "test")
    message = str(error.value)
    assert message.startswith(f"OOD set mnist: {archive} is corrupt or truncated (")
    assert message.endswith(REMEDY)
    assert _short_error(error.value) == message  # what the record and the command say


def one_class_folder(root: Path) -> Path:
    (root / "cats").mkdir(parents=True)
    for n in range(6):
        (root / "cats" / f"{n}.png").write_bytes(png(10 * n, "RGB"))
    return root


@pytest.mark.parametrize("in_memory", [True, False])
def test_an_image_folder_with_one_class_names_the_folder_and_the_class(tmp_path, in_memory):
    root = one_class_folder(tmp_path / "pets")
    dm = ImageFolderDataModule(
        root=str(root), seed=0, in_memory=in_memory, cache_dir=str(tmp_path / "c")
    )
    with pytest.raises(ValueError) as error:
        dm.setup()
    message = str(error.value)
    assert message.startswith(f"data.root {root} has 1 class folder (cats);")
    assert "at least 2" in message and "held_out_classes" not in message


def test_an_image_folder_without_images_names_the_folder(tmp_path):
    (tmp_path / "pets" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"no image files .* found in {tmp_path / 'pets'}$"):
        ImageFolderDataModule(root=str(tmp_path / "pets"), seed=0).setup()


def test_a_run_on_a_one_class_folder_fails_and_records_why(tmp_path):
    root = one_class_folder(tmp_path / "pets")
    outcome = run_in_store(
        tmp_path, [*QUICK, "data=imagefolder", f"data.root={root}", "data.num_workers=0"]
    )
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"ValueError: data.root {root} has 1 class folder (cats);")
    record = read_record(outcome.run_dir)
    assert record["status"] == "failed" and "Traceback" in record["traceback"]
