"""Gated CRF loss: energy and gradient against a brute-force double loop over window pairs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import load_image, random_blocks_image
from rloss.lattice import LocalWindowAffinity
from rloss.regularizers import GatedCRFLoss, build_regularizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def window_matrix(image: torch.Tensor, sigma_rgb: float, sigma_xy: float, radius: int) -> torch.Tensor:
    """Explicit N x N float64 W from the definition, one pixel pair at a time: K_ij for j != i in the
    (2r+1)^2 window of i inside the image, 0 elsewhere."""
    _, _, h, w = image.shape
    rgb = image[0].double()
    matrix = torch.zeros(h * w, h * w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for v in range(max(0, y - radius), min(h, y + radius + 1)):
                for u in range(max(0, x - radius), min(w, x + radius + 1)):
                    if (v, u) == (y, x):
                        continue
                    d_xy = (x - u) ** 2 + (y - v) ** 2
                    d_rgb = float((rgb[:, y, x] - rgb[:, v, u]).square().sum())
                    matrix[y * w + x, v * w + u] = math.exp(-d_xy / (2 * sigma_xy**2) - d_rgb / (2 * sigma_rgb**2))
    return matrix


def brute_force_energy(image, probs, roi, sigma_rgb, sigma_xy, radius) -> torch.Tensor:
    """(1 / n_roi) sum_ij m_i m_j K_ij (1 - S_i . S_j) for one image, differentiable in probs."""
    matrix = window_matrix(image, sigma_rgb, sigma_xy, radius)
    m = roi.reshape(-1).double()
    s = probs[0].reshape(probs.shape[1], -1).double().T  # (N, K)
    agreement = s @ s.T
    return (m[:, None] * m[None, :] * matrix * (1 - agreement)).sum() / m.sum().clamp(min=1)


@pytest.mark.parametrize(("name", "radius"), [("2008_000003", 2), ("2011_003223", 3)])
def test_energy_and_gradient_match_the_double_loop(name: str, radius: int) -> None:
    image = load_image(name, 20)  # about 18 x 25
    h, w = image.shape[2:]
    roi = torch.ones(1, h, w, dtype=torch.bool)
    roi[:, :, :4] = False  # padding on the left: gated out
    roi[:, -2:, :] = False
    logits = torch.randn(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = GatedCRFLoss(sigma_rgb=25.5, sigma_xy=3.0, radius=radius, scale_factor=1.0)
    ours_logits = logits.clone().requires_grad_()
    ours = loss.energy(image, ours_logits.softmax(1), roi)
    ours.backward()
    ref_logits = logits.clone().requires_grad_()
    reference = brute_force_energy(image, ref_logits.softmax(1) * roi[:, None], roi, 25.5, 3.0, radius)
    reference.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours_logits.grad, ref_logits.grad, rtol=1e-9, atol=1e-13)
    assert float(ours.detach()) > 0


def test_gradient_matches_finite_differences() -> None:
    image = random_blocks_image(6, 7, 3)
    roi = torch.ones(1, 6, 7, dtype=torch.bool)
    roi[0, 0, :3] = False
    logits = torch.randn(1, 3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loss = GatedCRFLoss(sigma_rgb=30.0, sigma_xy=2.0, radius=2, scale_factor=1.0)
    assert torch.autograd.gradcheck(lambda x: loss.energy(image, x.softmax(1), roi), (logits.requires_grad_(),))


def test_window_is_clipped_at_the_image_border() -> None:
    """On a flat image W 1 at a pixel is the sum of the spatial kernel over its in-image neighbours."""
    image = torch.full((1, 3, 9, 10), 80.0)
    affinity = LocalWindowAffinity(image, 25.5, 2.0, radius=3)
    degree = affinity.filter(torch.ones(1, 1, 9, 10, dtype=torch.float64))[0, 0]

    def expected(y: int, x: int) -> float:
        return sum(
            math.exp(-((v - y) ** 2 + (u - x) ** 2) / (2 * 2.0**2))
            for v in range(max(0, y - 3), min(9, y + 4)) for u in range(max(0, x - 3), min(10, x + 4))
            if (v, u) != (y, x)
        )  # fmt: skip

    for y, x in [(0, 0), (0, 5), (4, 9), (4, 5), (8, 9)]:
        assert float(degree[y, x]) == pytest.approx(expected(y, x), rel=1e-12)
    assert float(degree[0, 0]) < float(degree[4, 5])


def test_scale_factor_downsamples_by_area_and_scales_sigma() -> None:
    image = load_image("2011_003223", 5)  # 75 x 100
    probs = torch.randn(1, 2, 75, 100, generator=torch.Generator().manual_seed(3)).softmax(1)
    half = GatedCRFLoss(sigma_xy=8.0, radius=3, scale_factor=0.5).energy(image, probs)
    size = (round(75 * 0.5), round(100 * 0.5))
    small_image = F.interpolate(image, size=size, mode="area")
    small_probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    manual = GatedCRFLoss(sigma_xy=4.0, radius=3, scale_factor=1.0).energy(small_image, small_probs)
    torch.testing.assert_close(half, manual)


def test_memory_stays_linear_in_the_window() -> None:
    """The filter never allocates a (K x window x H x W) tensor: no single op allocates more than a few
    (B, K, H, W) buffers."""
    image = load_image("2007_000032", 4)
    values = torch.rand(1, 21, *image.shape[2:])
    affinity = LocalWindowAffinity(image, 25.5, 6.0, radius=5)
    with torch.profiler.profile(profile_memory=True) as prof:
        affinity.filter(values)
    largest = max(event.cpu_memory_usage for event in prof.events())
    assert largest < 4 * values.numel() * values.element_size()  # unfolding would be 120x


def test_registry_and_bad_arguments() -> None:
    loss = build_regularizer("gatedcrf", weight=0.2, radius=2)
    assert isinstance(loss, GatedCRFLoss) and loss.weight == 0.2 and loss.radius == 2
    for kwargs, name in [
        ({"radius": 0}, "radius"), ({"radius": 1.5}, "radius"), ({"sigma_rgb": 0.0}, "sigma_rgb"),
        ({"sigma_xy": float("inf")}, "sigma_xy"), ({"sigma_xy": float("nan")}, "sigma_xy"),
        ({"scale_factor": 2.0}, "scale_factor"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            GatedCRFLoss(**kwargs)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_config_file_trains(voc_root, tmp_path, monkeypatch) -> None:
    from rloss.training.cli import run_cli
    from test_cli import tiny

    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", *tiny(voc_root, "--model.regularizers+=" + str(CONFIGS / "regularizer" / "gatedcrf.yaml"),
                                "--trainer.fast_dev_run", "true")])  # fmt: skip
    (regularizer,) = cli.model.regularizers
    assert isinstance(regularizer, GatedCRFLoss)
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_GatedCRFLoss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gradients_equal_cpu() -> None:
    image = load_image("2008_000003", 4)
    logits = torch.randn(1, 3, *image.shape[2:], generator=torch.Generator().manual_seed(4))
    loss = GatedCRFLoss()
    grads = []
    for device in ("cpu", "cuda"):
        leaf = logits.to(device).requires_grad_()
        loss(image.to(device), leaf.softmax(1)).backward()
        assert leaf.grad.device.type == device
        grads.append(leaf.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
