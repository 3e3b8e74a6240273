"""rloss propagate: scribbles -> dense mask on real VOC samples, CLI (file and folder), bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

import rloss.tools.propagate
from helpers import cli_error, save_tiny_checkpoint
from rloss.commands import main
from rloss.data.constants import voc_palette
from rloss.data.files import read_image, read_label
from rloss.metrics import mean_iou
from rloss.regularizers import build_regularizer
from rloss.tools.prior import network_probs
from rloss.tools.propagate import load_pair, propagate, voronoi_baseline

DATA = Path(__file__).parent / "data"
FAST = ["--steps", "30", "--width", "48"]


@pytest.mark.parametrize("stem", ["2011_003223", "2008_000003"])
def test_propagate_beats_nearest_scribble_and_the_previous_defaults_on_real_scribbles(stem: str) -> None:
    image, scribbles = load_pair(DATA / f"{stem}.jpg", DATA / f"{stem}_scribble.png", 21)
    truth = read_label(DATA / f"{stem}_gt.png", 21, image.shape[-2:])
    mask = propagate(image.permute(1, 2, 0).to(torch.uint8).numpy(), scribbles)
    previous = propagate(
        image, scribbles, [build_regularizer("densecrf", sigma_xy=6.4)], steps=300, lr=0.1, iterations=0
    )
    ours, baseline = mean_iou(mask, truth, 21), mean_iou(voronoi_baseline(scribbles), truth, 21)
    print(f"{stem}: nearest scribble {baseline:.1f}, previous {mean_iou(previous, truth, 21):.1f}, "
          f"defaults {ours:.1f} mIoU")
    assert mask.shape == scribbles.shape and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(scribbles.unique().tolist()) - {255}
    assert ours > baseline + 10.0
    assert ours > mean_iou(previous, truth, 21)


def test_label_propagation_follows_colour_regions_and_keeps_the_scribbles() -> None:
    """Two flat halves of different colour, one scribbled pixel in each far from the edge: every
    pixel ends up most probable for its half's class; scribbled pixels stay one-hot."""
    from rloss.tools.propagate import propagate_labels

    image = torch.full((1, 3, 20, 40), 40.0)
    image[..., 20:] = 200.0
    labels = torch.full((1, 20, 40), 255)
    labels[0, 10, 2], labels[0, 10, 37] = 0, 1
    probs = propagate_labels(image, labels, 2, iterations=50, width=40)
    assert torch.allclose(probs.sum(1), torch.ones(1, 20, 40), atol=1e-5)
    assert (probs[0].argmax(0)[:, :20] == 0).all() and (probs[0].argmax(0)[:, 20:] == 1).all()
    assert float(probs[0, 0, 10, 2]) == 1.0 and float(probs[0, 1, 10, 37]) == 1.0
    uniform = propagate_labels(image, labels, 2, iterations=0, width=40)
    assert float(uniform[0, 0, 0, 0]) == 0.5


def _two_scribbles(height: int = 40, width: int = 60) -> tuple[Tensor, Tensor]:
    """A flat grey image (1, H, W) (no colour edge to follow) and scribbles (H, W): class 0 down the
    left edge, class 1 down the right edge."""
    scribbles = torch.full((height, width), 255)
    scribbles[:, 1], scribbles[:, width - 2] = 0, 1
    return torch.full((1, height, width), 0.5), scribbles


def test_a_uniform_prior_changes_nothing() -> None:
    """With a prior equal at every pixel, each propagation step's weight cancels in the
    normalization and the start is the same uniform P: the same probabilities as without one."""
    from rloss.tools.propagate import propagate_probs

    image, scribbles = _two_scribbles()
    classes, plain = propagate_probs(image, scribbles)
    prior_classes, with_prior = propagate_probs(image, scribbles, prior=torch.full((2, 40, 60), 3.0))
    assert classes.tolist() == prior_classes.tolist() == [0, 1]
    assert torch.allclose(plain, with_prior, atol=1e-6)


def test_a_prior_decides_far_from_the_scribbles_and_the_scribbles_decide_near_them() -> None:
    """A network's prior confident in a class nobody scribbled (2) in a block between the strokes,
    wider than the propagation's kernel: the block takes that class, the strokes and their neighbours
    keep theirs; without scribbles the prior's argmax is the mask."""
    image, scribbles = _two_scribbles()
    prior = torch.full((3, 40, 60), 0.01)
    prior[:2] = 0.5
    prior[:, 5:35, 18:42] = torch.tensor([1e-4, 1e-4, 1.0 - 2e-4])[:, None, None]
    mask = propagate(image, scribbles, prior=prior)
    without = propagate(image, scribbles)
    assert (mask[8:32, 21:39] == 2).all() and not (without == 2).any()
    assert (mask[:, :4] == 0).all() and (mask[:, -4:] == 1).all()
    assert torch.equal(propagate(image, torch.full((40, 60), 255), prior=prior), prior.argmax(0))


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        (torch.ones(2, 40, 61), r"prior must have shape \(K, 40, 60\)"),
        (torch.ones(2, 2, 40, 60), r"prior must have shape"),
        (-torch.ones(2, 40, 60), "finite probabilities >= 0"),
        (torch.zeros(2, 40, 60), "positive sum"),
        (torch.full((2, 40, 60), float("nan")), "finite probabilities"),
        (torch.ones(1, 40, 60), "scribbles hold class 1 but the prior has 1 classes"),
    ],
)
def test_a_bad_prior_raises_naming_it(prior: Tensor, message: str) -> None:
    image, scribbles = _two_scribbles()
    with pytest.raises(ValueError, match=message):
        propagate(image, scribbles, prior=prior)


def _heart(size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic cardiac slice in float 0..1 (image, truth, scribbles (H, W)): dark air (0.05)
    around a grey body disc (0.5), in it a dark ring (0.12, class 2) around a bright pool (0.9,
    class 3), a little noise; scribbles are loops inside the pool, the ring and the body around the
    ring (class 0), as in ACDC. The air is as dark as the ring but far from its scribble."""
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    truth = np.where(radius < 10, 3, np.where(radius < 17, 2, 0))
    image = np.where(radius < 10, 0.9, np.where(radius < 17, 0.12, np.where(radius < 45, 0.5, 0.05)))
    image = np.clip(image + np.random.default_rng(0).normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
    scribbles = np.full((size, size), 255)
    for low, high, label in ((4, 5.5, 3), (13, 14.5, 2), (28, 30, 0)):
        scribbles[(radius >= low) & (radius < high)] = label
    return image, truth, scribbles


def test_the_mask_does_not_depend_on_the_intensity_units() -> None:
    """The same grayscale slice in float 0..1, in 0..255 and in 16-bit levels gives the same mask
    (the propagation works on the image's own range), and that mask is the truth almost everywhere."""
    image, truth, scribbles = _heart()
    masks = [propagate(torch.from_numpy(image * scale), torch.from_numpy(scribbles)) for scale in (1.0, 255.0, 65535.0)]
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
    assert mean_iou(masks[0], torch.from_numpy(truth), 4) > 90.0


def test_normalize_intensities_maps_each_image_range_to_0_255() -> None:
    from rloss.tools.propagate import normalize_intensities

    images = torch.stack([torch.linspace(0.2, 0.7, 12).reshape(1, 3, 4), torch.full((1, 3, 4), 7.0)])
    out = normalize_intensities(images)
    assert torch.allclose(out[0], (images[0] - 0.2) / 0.5 * 255.0, atol=1e-4)
    assert torch.equal(out[1], torch.zeros(1, 3, 4))  # a constant image: no intensity edges


def test_far_regions_go_to_the_nearest_scribble_not_to_the_class_of_their_intensity() -> None:
    """The ACDC failure on a constructed slice: the air outside the body is as dark as the ring, but
    the body's background loop is its nearest scribble; it must not become ring (class 2). The mask
    agrees with nearest-scribble labelling on the air and with the truth on the ring and the pool."""
    image, truth, scribbles = _heart()
    mask, truth = propagate(image, scribbles).numpy(), truth
    rows, cols = np.mgrid[:128, :128]
    air = np.hypot(rows - 64, cols - 64) >= 47
    assert (mask[air] == voronoi_baseline(scribbles).numpy()[air]).all() and (mask[air] == 0).all()
    for label in (2, 3):
        assert ((mask == label) & (truth == label)).sum() > 0.95 * (truth == label).sum()


def test_spatial_bandwidth_follows_the_scribble_spacing() -> None:
    """Two vertical strokes 10 px apart: spacing 10, sigma_xy 0.3 x 10 = 3 px; strokes at the image's
    ends: the upper bound 0.15 x width; a single class: the upper bound too."""
    from rloss.regularizers.affinity import PROPAGATION_SIGMA_XY_BOUNDS, PROPAGATION_SIGMA_XY_SPACING
    from rloss.tools.propagate import propagation_sigma_xy, scribble_spacing

    labels = torch.full((20, 40), 255)
    labels[:, 10], labels[:, 20] = 0, 1
    assert scribble_spacing(labels) == 10.0
    assert propagation_sigma_xy(labels, 40) == pytest.approx(PROPAGATION_SIGMA_XY_SPACING * 10.0)
    labels[:, 20], labels[:, 39] = 255, 1
    assert propagation_sigma_xy(labels, 40) == pytest.approx(PROPAGATION_SIGMA_XY_BOUNDS[1] * 40)
    labels[:, 39] = 0
    assert scribble_spacing(labels) == float("inf")
    assert propagation_sigma_xy(labels, 40) == pytest.approx(PROPAGATION_SIGMA_XY_BOUNDS[1] * 40)


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


def test_cli_folder_mode_matches_by_stem_and_reports_images_without_scribbles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, scribbles, out = tmp_path / "images", tmp_path / "scribbles", tmp_path / "out"
    images.mkdir(), scribbles.mkdir()
    for stem in ("2008_000003", "2011_003223"):
        shutil.copy(DATA / f"{stem}.jpg", images)
        shutil.copy(DATA / f"{stem}_scribble.png", scribbles / f"{stem}.png")
    for stem in ("2007_000032", "2007_000063"):  # no scribbles: reported, skipped
        shutil.copy(DATA / f"{stem}.jpg", images)
    assert main(["propagate", "--image", str(images), "--scribbles", str(scribbles), "--output", str(out),
                 "--regularizer", "ncut", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["2008_000003.png", "2011_003223.png"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert str(images / "2007_000032.jpg") in warnings[0] and str(images / "2007_000063.jpg") in warnings[1]
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
    "unreadable": (_write_bytes, "cannot decode"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_naming_the_file_and_writes_nothing(case: str, tmp_path: Path) -> None:
    make, message = BAD_INPUTS[case]
    scribbles = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=message) as error:
        rloss.tools.propagate.main(["--image", str(DATA / "2011_003223.jpg"), "--scribbles", str(scribbles),
                              "--output", str(out / "mask.png"), *FAST])
    assert str(scribbles) in str(error.value)
    assert not any(out.iterdir())


def test_unreadable_image_raises_naming_it(tmp_path: Path) -> None:
    image = tmp_path / "broken.jpg"
    image.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="cannot decode") as error:
        rloss.tools.propagate.main(["--image", str(image), "--scribbles", str(DATA / "2011_003223_scribble.png"),
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
        rloss.tools.propagate.main(["--image", str(images), "--scribbles", str(scribbles), "--output", str(out), *FAST])
    assert str(bad) in str(error.value)
    assert not out.exists() or not any(out.iterdir())


def _no_compute(*args: object, **kwargs: object) -> None:
    raise AssertionError("propagate ran before the arguments were checked")


@pytest.mark.parametrize(
    ("argument", "value"),
    [("--width", "0"), ("--width", "-3"), ("--steps", "-1"), ("--iterations", "-1"), ("--lr", "0"),
     ("--lr", "nan"), ("--lr", "-1")],
)
def test_bad_settings_raise_naming_the_argument(
    argument: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rloss.tools.propagate, "propagate", _no_compute)
    with pytest.raises(ValueError, match=f"^{argument} must be") as error:
        rloss.tools.propagate.main(["--image", str(DATA / "2011_003223.jpg"), "--scribbles",
                              str(DATA / "2011_003223_scribble.png"), "--output", str(tmp_path / "m.png"),
                              argument, value])
    assert len(str(error.value).splitlines()) == 1


def _output_under_a_file(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "file").write_text("x")
    return DATA / "2011_003223.jpg", tmp_path / "file" / "mask.png"


def _folder_as_mask(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "masks").mkdir()
    return DATA / "2011_003223.jpg", tmp_path / "masks"


def _file_as_folder(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(DATA / "2011_003223.jpg", images)
    (tmp_path / "out.png").write_text("x")
    return images, tmp_path / "out.png"


BAD_OUTPUTS = {
    "under a file": (_output_under_a_file, "is a file, not a folder"),
    "folder for a mask": (_folder_as_mask, "is a folder; expected the path of a mask PNG"),
    "file for a folder": (_file_as_folder, "is a file; expected a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_OUTPUTS))
def test_bad_output_raises_naming_it_before_computing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, message = BAD_OUTPUTS[case]
    image, output = make(tmp_path)
    scribbles = DATA / "2011_003223_scribble.png" if image.is_file() else DATA
    monkeypatch.setattr(rloss.tools.propagate, "propagate", _no_compute)
    with pytest.raises(ValueError, match=message) as error:
        rloss.tools.propagate.main(["--image", str(image), "--scribbles", str(scribbles), "--output", str(output)])
    assert str(error.value).startswith(f"--output {output}:")


def test_cli_prints_a_bad_argument_as_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["propagate", "--image", str(DATA / "2011_003223.jpg"), "--scribbles",
                   str(DATA / "2011_003223_scribble.png"), "--output", str(tmp_path / "m.png"), "--width", "0"])
    assert status == 2
    assert "rloss: error: --width must be an integer >= 1" in capsys.readouterr().err


def test_cli_checkpoint_is_the_prior_and_bad_ones_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint``: the mask is propagate(..., prior=the network's softmax) of the grayscale
    slice; a checkpoint of another class count, or an RGB image for a 1-channel network, is one
    error line naming it, and nothing is written."""
    image, _, scribbles = _heart(48)
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "slice.png")
    Image.fromarray(scribbles.astype(np.uint8)).save(tmp_path / "slice_scribble.png")
    checkpoint = tmp_path / "net.ckpt"
    model = save_tiny_checkpoint(checkpoint, num_classes=4, in_channels=1)
    args = ["propagate", "--image", str(tmp_path / "slice.png"), "--scribbles", str(tmp_path / "slice_scribble.png"),
            "--num-classes", "4", "--checkpoint", str(checkpoint)]
    assert main([*args, "--output", str(tmp_path / "mask.png")]) == 0
    pixels = read_image(tmp_path / "slice.png")
    prior = model(pixels[None]).softmax(1)[0].detach()
    expected = propagate(pixels, torch.from_numpy(scribbles), prior=prior)
    assert torch.allclose(network_probs(model, pixels), prior, atol=1e-6)
    assert np.array_equal(read_label(tmp_path / "mask.png", 4, expected.shape).numpy(), expected.numpy())
    wrong_count = cli_error(capsys, [*args[:5], "--num-classes", "21", "--checkpoint", str(checkpoint),
                                     "--output", str(tmp_path / "a.png")])
    assert "predicts 4 classes; expected 21 (--num-classes)" in wrong_count
    save_tiny_checkpoint(tmp_path / "gray21.ckpt", num_classes=21, in_channels=1)
    rgb = cli_error(capsys, ["propagate", "--image", str(DATA / "2011_003223.jpg"), "--scribbles",
                             str(DATA / "2011_003223_scribble.png"), "--num-classes", "21", "--checkpoint",
                             str(tmp_path / "gray21.ckpt"), "--output", str(tmp_path / "b.png")])
    assert "2011_003223.jpg: the image has 3 channels; the checkpoint takes 1" in rgb
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
