"""Evaluation plots: each writes a readable PNG and leaves no temp files behind."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sweeplab.evaluation.plots import reliability_diagram, roc_curve_plot, score_histogram
from sweeplab.metrics.calibration import reliability_bins
from sweeplab.metrics.ood import roc_curve


def _check_png(path, tmp_path, width=None):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    if width is not None:
        with Image.open(path) as image:
            assert image.size[0] == width
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _bins(scale: float):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=generator)
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
    return reliability_bins(torch.softmax(logits * scale, 1), labels)


def test_reliability_diagram(tmp_path):
    path = reliability_diagram(_bins(3.0), tmp_path / "rel.png", "test", ece=0.12)
    assert path == tmp_path / "rel.png"
    _check_png(path, tmp_path, width=400)


def test_reliability_diagram_before_and_after_in_one_picture(tmp_path):
    path = reliability_diagram(
        _bins(3.0),
        tmp_path / "plots" / "rel_ts.png",
        "test",
        ece=0.12,
        after=_bins(1.0),
        ece_after=0.02,
    )
    _check_png(path, tmp_path, width=800)


def test_reliability_diagram_with_empty_bins_and_no_ece(tmp_path):
    bins = reliability_bins(torch.tensor([[0.9, 0.1]]), torch.tensor([1]))
    _check_png(reliability_diagram(bins, tmp_path / "one.png", "one sample", None), tmp_path)


def test_score_histogram(tmp_path):
    generator = torch.Generator().manual_seed(0)
    scores_in = torch.randn(500, generator=generator)
    scores_out = torch.cat([torch.randn(500, generator=generator) + 2, torch.tensor([torch.inf])])
    path = score_histogram(scores_in, scores_out, tmp_path / "hist.png", "msp on svhn")
    _check_png(path, tmp_path, width=400)


def test_score_histogram_without_finite_scores_raises(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        score_histogram(torch.tensor([torch.inf]), torch.empty(0), tmp_path / "h.png", "x")


def test_roc_curve_plot(tmp_path):
    generator = torch.Generator().manual_seed(0)
    scores_in = torch.randn(500, generator=generator)
    curves = {
        "msp": roc_curve(scores_in, torch.randn(400, generator=generator) + 1),
        "energy": roc_curve(scores_in, torch.randn(400, generator=generator) + 2),
    }
    path = roc_curve_plot(curves, tmp_path / "roc.png", "svhn")
    _check_png(path, tmp_path, width=400)
    with pytest.raises(ValueError, match="no ROC"):
        roc_curve_plot({}, tmp_path / "none.png", "empty")
