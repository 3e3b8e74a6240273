"""rloss propagate: scribbles -> dense mask on real VOC samples, CLI (file and folder), bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rloss.cli import main
from rloss.data.files import read_label
from rloss.data.constants import voc_palette
from rloss.metrics import mean_iou
from rloss.propagate import default_regularizer, load_pair, propagate, voronoi_baseline

DATA = Path(__file__).parent / "data"
FAST = ["--steps", "30", "--width", "48"]


@pytest.mark.parametrize("stem", ["2011_003223", "2008_000003"])
def test_propagate_beats_voronoi_on_real_images(stem: str) -> None:
    image, scribbles = load_pair(DATA / f"{stem}.jpg", DATA / f"{stem}_scribble.png", 21)
    truth = read_label(DATA / f"{stem}_gt.png", 21, image.shape[-2:])
    mask = propagate(image.permute(1, 2, 0).to(torch.uint8).numpy(), scribbles, [default_regularizer("densecrf")])
    ours, baseline = mean_iou(mask, truth, 21), mean_iou(voronoi_baseline(scribbles), truth, 21)
    print(f"{stem}: Voronoi {baseline:.1f} -> propagate(densecrf) {ours:.1f} mIoU")
    assert mask.shape == scribbles.shape and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(scribbles.unique().tolist()) - {255}
    # The prototype shows a clear win on 2011_003223 (67 -> 86) and a marginal one on 2008_000003.
    assert ours > baseline + (15.0 if stem == "2011_003223" else 0.0)


def test_voronoi_baseline_copies_the_nearest_scribble() -> None:
    scribbles = torch.full((5, 7), 255)
    scribbles[2, 0], scribbles[2, 6] = 3, 8
    expected = torch.tensor([3, 3, 3, 3, 8, 8, 8]).expand(5, 7)
    assert torch.equal(voronoi_baseline(scribbles), expected)


def _check_palette_mask(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as mask:
        assert mask.mode == "P" and mask.size == size
        assert mask.getpalette()[: 3 * 21] == voc_palette()[: 3 * 21]
        assert np.asarray(mask).max() < 21


def test_cli_writes_a_palette_mask_of_the_image_size(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "mask.png"
    stem = "2011_003223"
    assert main(["propagate", "--image", str(DATA / f"{stem}.jpg"), "--scribbles",
                 str(DATA / f"{stem}_scribble.png"), "--output", str(out), *FAST]) == 0
    with Image.open(DATA / f"{stem}.jpg") as image:
        _check_palette_mask(out, image.size)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.png"]  # no temp file left


def test_cli_folder_mode_matches_by_stem(tmp_path: Path) -> None:
    images, scribbles, out = tmp_path / "images", tmp_path / "scribbles", tmp_path / "out"
    images.mkdir(), scribbles.mkdir()
    for stem in ("2008_000003", "2011_003223"):
        shutil.copy(DATA / f"{stem}.jpg", images)
        shutil.copy(DATA / f"{stem}_scribble.png", scribbles / f"{stem}.png")
    shutil.copy(DATA / "2007_000032.jpg", images)  # no scribbles: skipped
    main(["propagate", "--image", str(images), "--scribbles", str(scribbles), "--output", str(out),
          "--regularizer", "ncut", *FAST])
    assert sorted(p.name for p in out.iterdir()) == ["2008_000003.png", "2011_003223.png"]
    for stem in ("2008_000003", "2011_003223"):
        with Image.open(images / f"{stem}.jpg") as image:
            _check_palette_mask(out / f"{stem}.png", image.size)


def _save_label(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)
    return path


def _save_label_in(folder: Path, array: np.ndarray) -> Path:
    return _save_label(folder / "scribbles.png", array)


def _write_bytes(folder: Path) -> Path:
    path = folder / "scribbles.png"
    path.write_bytes(b"not a png")
    return path


BAD_INPUTS = {
    "size": (lambda d: _save_label_in(d, np.full((10, 12), 0)), "differs from its image"),
    "empty": (lambda d: _save_label_in(d, np.full((375, 500), 255)), "holds no scribble"),
    "class": (lambda d: _save_label_in(d, np.where(np.eye(375, 500) > 0, 21, 255)), "class id 21"),
    "unreadable": (_write_bytes, "cannot read"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_naming_the_file_and_writes_nothing(case: str, tmp_path: Path) -> None:
    make, message = BAD_INPUTS[case]
    scribbles = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=message) as error:
        main(["propagate", "--image", str(DATA / "2011_003223.jpg"), "--scribbles", str(scribbles),
              "--output", str(out / "mask.png"), *FAST])
    assert str(scribbles) in str(error.value)
    assert not any(out.iterdir())


def test_unreadable_image_raises_naming_it(tmp_path: Path) -> None:
    image = tmp_path / "broken.jpg"
    image.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot read") as error:
        main(["propagate", "--image", str(image), "--scribbles", str(DATA / "2011_003223_scribble.png"),
              "--output", str(tmp_path / "mask.png")])
    assert str(image) in str(error.value)
    assert not (tmp_path / "mask.png").exists()


def test_num_classes_widens_the_accepted_ids(tmp_path: Path) -> None:
    scribbles = np.full((375, 500), 255)
    scribbles[10:20, 10:200], scribbles[300:310, 10:400] = 30, 0
    path = _save_label(tmp_path / "s.png", scribbles)
    out = tmp_path / "mask.png"
    main(["propagate", "--image", str(DATA / "2011_003223.jpg"), "--scribbles", str(path), "--output", str(out),
          "--num-classes", "40", *FAST])
    with Image.open(out) as mask:
        assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 30}


def test_folder_with_one_bad_pair_writes_nothing(tmp_path: Path) -> None:
    images, scribbles, out = tmp_path / "images", tmp_path / "scribbles", tmp_path / "out"
    images.mkdir(), scribbles.mkdir()
    shutil.copy(DATA / "2008_000003.jpg", images)
    shutil.copy(DATA / "2008_000003_scribble.png", scribbles)
    shutil.copy(DATA / "2011_003223.jpg", images)
    bad = _save_label(scribbles / "2011_003223.png", np.full((375, 500), 255))
    with pytest.raises(ValueError, match="holds no scribble") as error:
        main(["propagate", "--image", str(images), "--scribbles", str(scribbles), "--output", str(out), *FAST])
    assert str(bad) in str(error.value)
    assert not out.exists() or not any(out.iterdir())
