"""Mean-field DenseCRF: energy decreases on a real image, it cleans a noisy softmax, predict with a DenseCRF
postprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import network_checkpoint
from rloss.crf import DenseCRF
from rloss.data.files import read_image, read_label
from rloss.training.cli import run_cli
from test_cli import tiny

DATA = Path(__file__).parent / "data"
SIZE = (94, 125)  # 2011_003223 (375 x 500) at 1/4


@pytest.fixture(scope="module")
def noisy_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image (1,3,h,w) 0..255, noisy softmax (1,2,h,w), truth (1,h,w) 0 background / 1 sheep)."""
    image = read_image(DATA / "2011_003223.jpg")
    truth = read_label(DATA / "2011_003223_gt.png", 21, image.shape[-2:])
    small = F.interpolate(image[None], size=SIZE, mode="area")
    labels = (F.interpolate(truth[None, None].float(), size=SIZE, mode="nearest")[:, 0] == 17).long()
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 2, *SIZE, generator=generator)
    logits = 2.0 * F.one_hot(labels, 2).permute(0, 3, 1, 2).float() + 1.5 * noise
    return small, logits.softmax(1), labels


def test_mean_field_lowers_the_energy_monotonically(noisy_scene) -> None:
    image, probs, _ = noisy_scene
    crf = DenseCRF(iterations=8, sxy_app=80.0 / 4)  # appearance bandwidth scaled with the image
    sequence = crf.iterate(image, probs)
    relaxed = torch.stack([crf.energy(image, probs, q) for q in sequence])[:, 0]
    free = torch.stack([crf.energy(image, probs, q, entropy=True) for q in sequence])[:, 0]
    print("relaxed energy per iteration:", [round(float(e)) for e in relaxed])
    print("free energy per iteration:", [round(float(e)) for e in free])
    for energies in (relaxed, free):
        steps = energies[1:] - energies[:-1]
        assert (steps <= 1e-4 * energies[:-1].abs()).all(), energies.tolist()
    assert relaxed[-1] < 0.01 * relaxed[0]


def test_crf_cleans_a_noisy_softmax(noisy_scene) -> None:
    image, probs, labels = noisy_scene
    refined = DenseCRF(sxy_app=20.0)(image, probs)
    assert refined.shape == probs.shape and torch.allclose(refined.sum(1), torch.ones(1, *SIZE), atol=1e-5)
    before = (probs.argmax(1) == labels).float().mean()
    after = (refined.argmax(1) == labels).float().mean()
    assert before < 0.85 and after > 0.95


def test_discrete_energy_of_labels_matches_one_hot(noisy_scene) -> None:
    image, probs, labels = noisy_scene
    crf = DenseCRF(sxy_app=20.0)
    onehot = F.one_hot(labels, 2).permute(0, 3, 1, 2).double()
    assert torch.allclose(crf.energy(image, probs, labels), crf.energy(image, probs, onehot))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="damping"):
        DenseCRF(damping=0.0)
    with pytest.raises(ValueError, match="iterations"):
        DenseCRF(iterations=-1)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_predict_with_crf_postprocess(voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    sizes = [(40, 56), (48, 36)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"p{i}.png")
    cli = run_cli(["predict", *tiny(voc_root, "--data.predict_dir", str(images), "--data.val_batch_size", "2",
                                    "--predict_writer.output_dir", "masks", "--trainer.logger", "false",
                                    "--model.postprocess", "rloss.crf.DenseCRF",
                                    "--model.init_weights", str(network_checkpoint(tmp_path / "net.ckpt",
                                                                                   "lraspp_mobilenet_v3_large", 21)))])
    assert isinstance(cli.model.crf, DenseCRF)
    for i, (h, w) in enumerate(sizes):
        with Image.open(tmp_path / "masks" / f"p{i}.png") as mask:
            assert mask.mode == "P" and mask.size == (w, h)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_postprocessing_lowers_the_energy_and_keeps_miou(noisy_scene, backend: str) -> None:
    from torchmetrics.functional.classification import multiclass_jaccard_index

    image, probs, labels = noisy_scene
    crf = DenseCRF(sxy_app=20.0, backend=backend)
    refined = crf(image, probs)
    assert float(crf.energy(image, probs, refined.argmax(1))) < float(crf.energy(image, probs, probs.argmax(1)))
    before = multiclass_jaccard_index(probs.argmax(1), labels, num_classes=2)
    after = multiclass_jaccard_index(refined.argmax(1), labels, num_classes=2)
    assert float(after) >= float(before) + 0.1, (float(before), float(after))
