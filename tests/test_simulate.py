"""Scribbles simulated from real VOC ground truths: coverage, agreement, every region stroked, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from rloss.data.simulate import BACKGROUND, MIN_REGION, simulate_scribbles

DATA = Path(__file__).parent / "data"
STEMS = sorted(p.name.removesuffix("_gt.png") for p in DATA.glob("*_gt.png"))


def _truth(stem: str) -> np.ndarray:
    with Image.open(DATA / f"{stem}_gt.png") as gt:
        return np.asarray(gt).astype(np.int64)


@pytest.mark.parametrize("stem", STEMS)
def test_strokes_agree_with_the_truth_and_cover_about_three_percent(stem: str) -> None:
    truth = _truth(stem)
    scribbles = simulate_scribbles(truth, seed=0)
    labeled = scribbles != 255
    assert scribbles.shape == truth.shape and scribbles.dtype == np.int64
    assert 0.015 <= labeled.mean() <= 0.04
    assert np.array_equal(scribbles[labeled], truth[labeled])  # never on void (255) or another class
    for label in set(np.unique(truth).tolist()) - {255}:
        components, count = ndimage.label(truth == label)
        for index in range(1, count + 1):
            region = components == index
            if label != BACKGROUND and region.mean() >= MIN_REGION:
                assert (labeled & region).any(), f"class {label} region {index} has no stroke"
    assert (scribbles == BACKGROUND).sum() > 0.3 * labeled.sum()


def test_same_seed_same_scribbles_other_seed_other_strokes() -> None:
    truth = _truth("2011_003223")
    first = simulate_scribbles(truth, seed=3)
    assert np.array_equal(first, simulate_scribbles(truth, seed=3))
    assert not np.array_equal(first, simulate_scribbles(truth, seed=4))


@pytest.mark.parametrize(("kwargs", "message"), [({"coverage": 0.0}, "coverage"), ({"coverage": 0.6}, "coverage")])
def test_bad_settings_raise_naming_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_scribbles(np.zeros((40, 50), dtype=np.int64), seed=0, **kwargs)
    with pytest.raises(ValueError, match="shape"):
        simulate_scribbles(np.zeros((4, 40, 50), dtype=np.int64), seed=0)
