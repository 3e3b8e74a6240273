"""The three regularized losses and partial cross-entropy against explicit formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import dense_affinity, load_image, random_blocks_image
from rloss.losses import partial_cross_entropy
from rloss.regularizers import (
    REGISTRY,
    DenseCRFLoss,
    GatedCRFLoss,
    NormalizedCutLoss,
    SizeLoss,
    build_regularizer,
)


def soft_masks(b: int, k: int, h: int, w: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, h, w, generator=g, dtype=dtype).mul(2).softmax(1)


def explicit_energies(image, probs, roi, sigma_rgb, sigma_xy):
    """(densecrf, ncut) of one image from the explicit W, straight from the definitions."""
    w = dense_affinity(image, sigma_rgb, sigma_xy)
    m = roi.reshape(-1).double().numpy()
    s = (probs[0] * roi).reshape(probs.shape[1], -1).double().numpy()
    crf = sum(s_k @ w @ (m - s_k) for s_k in s) / max(m.sum(), 1)
    degree = w @ m
    ncut = sum(s_k @ w @ (m - s_k) / (degree @ s_k + 1e-6) for s_k in s)
    return crf, ncut


@pytest.mark.parametrize("seed", [0, 1])
def test_energies_match_explicit_affinity(seed: int) -> None:
    image = random_blocks_image(9, 11, seed)
    probs = soft_masks(1, 3, 9, 11, seed)
    roi = torch.rand(1, 9, 11, generator=torch.Generator().manual_seed(seed)) > 0.2
    crf, ncut = explicit_energies(image, probs, roi, 20.0, 4.0)
    exact_crf = DenseCRFLoss(sigma_rgb=20.0, sigma_xy=4.0, backend="exact").energy(image, probs, roi)
    exact_ncut = NormalizedCutLoss(sigma_rgb=20.0, sigma_xy=4.0, backend="exact").energy(image, probs, roi)
    assert float(exact_crf) == pytest.approx(crf, rel=1e-10)
    assert float(exact_ncut) == pytest.approx(ncut, rel=1e-10)
    assert crf > 0 and ncut > 0


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss])
def test_lattice_energy_close_to_exact_on_a_real_image(cls) -> None:
    image = load_image("2011_003223", 5)  # 75 x 100
    g = torch.Generator().manual_seed(0)
    logits = F.interpolate(torch.randn(1, 3, 8, 10, generator=g), size=image.shape[2:], mode="bilinear")
    probs = (3 * logits).softmax(1)
    kwargs = {"sigma_rgb": 15.0, "sigma_xy": 20.0}
    lattice = float(cls(**kwargs).energy(image, probs))
    exact = float(cls(**kwargs, backend="exact").energy(image, probs))
    assert lattice == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss])
@pytest.mark.parametrize("backend", ["numba", "torch", "exact"])
def test_gradients_match_finite_differences(cls, backend: str) -> None:
    """Lattices: gradient of the lattice energy itself (W^T S via the reverse blur); exact: of the exact."""
    image = random_blocks_image(5, 6, 7)
    roi = torch.ones(1, 5, 6, dtype=torch.bool)
    roi[0, 0, :2] = False
    logits = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = cls(sigma_rgb=25.0, sigma_xy=3.0, backend=backend)
    assert torch.autograd.gradcheck(
        lambda x: loss.energy(image, x.softmax(1), roi), (logits.requires_grad_(),), eps=1e-6, atol=1e-8, rtol=1e-5
    )


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_lattice_gradient_needs_the_transpose(backend: str) -> None:
    """The lattice W is asymmetric: the exact gradient W1 - (W + W^T) S differs from W1 - 2 W S."""
    from rloss.lattice import bilateral_affinity

    image = load_image("2008_000003", 6)
    probs = soft_masks(1, 3, *image.shape[2:], seed=2).requires_grad_()
    DenseCRFLoss(sigma_rgb=15.0, sigma_xy=100 / 6, backend=backend).energy(image, probs).backward()
    lattice = bilateral_affinity(image, 15.0, 100 / 6, backend)
    s = probs.detach()
    n = s.shape[2] * s.shape[3]
    degree = lattice.filter(torch.ones_like(s[:, :1]))
    exact_grad = (degree - lattice.filter(s) - lattice.filter(s, transpose=True)) / n
    naive_grad = (degree - 2 * lattice.filter(s)) / n
    torch.testing.assert_close(probs.grad, exact_grad, rtol=1e-6, atol=1e-9)
    rel = float((naive_grad - exact_grad).norm() / exact_grad.norm())
    assert rel > 1e-3  # the naive 2WS gradient is measurably off


def test_size_loss_known_values() -> None:
    image = torch.full((1, 3, 4, 5), 128.0)
    probs = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    probs[0, 0] = 1.0  # class 0 covers everything: V = (1, 0, 0)
    fixed = SizeLoss(source="fixed", lower=[0.2, 0.1, 0.0], upper=[0.5, 1.0, 1.0])
    assert float(fixed.energy(image, probs)) == pytest.approx(0.5**2 + 0.1**2)
    labels = torch.full((1, 4, 5), 255)
    labels[0, 0, 0] = 1  # tags: classes {1}; class 0 absent (b = 0), class 2 absent
    tags = SizeLoss(source="tags", lower=0.3, upper=0.9)
    assert float(tags.energy(image, probs, labels=labels)) == pytest.approx(1.0**2 + 0.3**2)
    labels[0, 1, :] = 1  # 6 of 20 pixels scribbled with class 1: lower bound 0.3 from the scribbles
    scribbles = SizeLoss(source="scribbles", lower=0.0, upper=1.0)
    assert float(scribbles.energy(image, probs, labels=labels)) == pytest.approx(1.0 + 0.3**2)
    bounds = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
    assert float(fixed.energy_with_bounds(image, probs, None, bounds)) == 0.0


def test_size_loss_gradient_and_roi() -> None:
    image = torch.full((2, 3, 4, 4), 50.0)
    logits = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    roi = torch.ones(2, 4, 4, dtype=torch.bool)
    roi[1] = False  # empty ROI: contributes 0
    loss = SizeLoss(source="fixed", lower=[0.9, 0.0], upper=[1.0, 0.1])
    assert torch.autograd.gradcheck(lambda x: loss.energy(image, x.softmax(1), roi), (logits,))


def test_densecrf_scale_factor_downsamples_and_scales_sigma() -> None:
    image = load_image("2011_003223", 5)
    probs = soft_masks(1, 2, *image.shape[2:], seed=3, dtype=torch.float32)
    half = DenseCRFLoss(sigma_xy=30.0, scale_factor=0.5, backend="exact").energy(image, probs)
    size = (round(image.shape[2] * 0.5), round(image.shape[3] * 0.5))
    small_image = F.interpolate(image, size=size, mode="nearest")
    small_probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    manual = DenseCRFLoss(sigma_xy=15.0, backend="exact").energy(small_image, small_probs)
    torch.testing.assert_close(half, manual)


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss, GatedCRFLoss, SizeLoss])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1)])
def test_edge_cases_no_nan(cls, shape) -> None:
    image = torch.full((1, 3, *shape), 77.0)
    for k in (1, 3):
        logits = torch.randn(1, k, *shape, requires_grad=True)
        for roi in (None, torch.zeros(1, *shape, dtype=torch.bool)):
            labels = torch.zeros(1, *shape, dtype=torch.long)
            value = cls().forward(image, logits.softmax(1), roi, labels)
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
            if roi is not None:
                assert float(value.detach()) == 0.0  # empty ROI: energy 0
            logits.grad = None


def test_single_class_crf_energy_is_zero() -> None:
    image = random_blocks_image(8, 8, 1)
    probs = torch.ones(1, 1, 8, 8)
    assert float(DenseCRFLoss().energy(image, probs)) == pytest.approx(0.0, abs=1e-6)
    assert float(NormalizedCutLoss().energy(image, probs)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss, GatedCRFLoss, SizeLoss])
def test_dtype_and_batch_mean(cls) -> None:
    images = torch.cat([random_blocks_image(10, 10, s) for s in range(2)])
    probs = soft_masks(2, 3, 10, 10, seed=4, dtype=torch.float32)
    labels = torch.randint(0, 2, (2, 10, 10))
    loss = cls()
    both = loss.energy(images, probs, None, labels)
    singles = [loss.energy(images[i : i + 1], probs[i : i + 1], None, labels[i : i + 1]) for i in range(2)]
    assert both.dtype == torch.float32
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2)
    half = loss.energy(images, probs.half(), None, labels)
    assert half.dtype == torch.float16


@pytest.mark.parametrize(
    ("probs", "roi", "message"),
    [
        (torch.rand(1, 3, 6, 6), None, "must sum to 1"),
        (-soft_masks(1, 3, 6, 6, 0, torch.float32), None, "non-negative"),
        (torch.full((1, 3, 6, 6), float("nan")), None, "NaN"),
        (soft_masks(1, 3, 6, 5, 0, torch.float32), None, r"\(B, H, W\) = \(1, 6, 5\)"),
        (soft_masks(2, 3, 6, 6, 0, torch.float32), None, "same batch"),
        (soft_masks(1, 3, 6, 6, 0, torch.float32), torch.ones(1, 5, 6, dtype=torch.bool), "roi must have shape"),
        (torch.ones(1, 3, 6, 6, dtype=torch.long), None, "floating-point"),
    ],
)
@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss, GatedCRFLoss, SizeLoss])
def test_bad_probs_are_named(cls, probs, roi, message) -> None:
    image = torch.rand(1, 3, 6, 6) * 255
    with pytest.raises(ValueError, match=message):
        cls(source="fixed").energy(image, probs, roi) if cls is SizeLoss else cls().energy(image, probs, roi)


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss])
def test_bad_images_and_settings_are_named(cls) -> None:
    probs = soft_masks(1, 2, 6, 6, 0, torch.float32)
    for image, message in [(torch.rand(3, 6, 6), r"\(B, C, H, W\)"), (torch.full((1, 3, 6, 6), math.nan), "NaN"),
                           (torch.ones(1, 3, 6, 6, dtype=torch.int64), "dtype")]:
        with pytest.raises(ValueError, match=message):
            cls().energy(image, probs)
    settings = [({"sigma_rgb": 0}, "sigma_rgb"), ({"sigma_xy": -2}, "sigma_xy"), ({"scale_factor": 2}, "scale_factor")]
    for kwargs, message in settings:
        with pytest.raises(ValueError, match=message):
            cls(**kwargs)


def test_registry_builds_by_name_and_weights() -> None:
    assert set(REGISTRY) == {"densecrf", "dice", "gatedcrf", "ncut", "selflabel", "size"}
    image = random_blocks_image(8, 8, 2)
    probs = soft_masks(1, 3, 8, 8, 5, torch.float32)
    crf = build_regularizer("densecrf", weight=3.0, sigma_xy=5.0)
    assert isinstance(crf, DenseCRFLoss)
    torch.testing.assert_close(crf(image, probs), 3.0 * crf.energy(image, probs))
    with pytest.raises(ValueError, match="densecrf, dice, gatedcrf, ncut, selflabel, size"):
        build_regularizer("potts")


def test_partial_cross_entropy_counts_labeled_pixels_only() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g, requires_grad=True)
    labels = torch.full((2, 5, 6), 255)
    labels[0, 1, 2], labels[0, 3, 3], labels[1, 0, 0] = 1, 3, 0
    labels[1, 4, :] = 254  # padding
    expected = torch.stack(
        [F.cross_entropy(logits[0, :, 1, 2][None], torch.tensor([1])),
         F.cross_entropy(logits[0, :, 3, 3][None], torch.tensor([3])),
         F.cross_entropy(logits[1, :, 0, 0][None], torch.tensor([0]))]
    ).mean()
    torch.testing.assert_close(partial_cross_entropy(logits, labels), expected)
    empty = partial_cross_entropy(logits, torch.full((2, 5, 6), 255))
    empty.backward()
    assert float(empty.detach()) == 0.0 and torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="class id 7"):
        partial_cross_entropy(logits, torch.full((2, 5, 6), 7))
    with pytest.raises(ValueError, match="labels must have shape"):
        partial_cross_entropy(logits, labels[:, :4])


def test_bind_builds_the_affinity_once(monkeypatch) -> None:
    from rloss.regularizers import affinity as module

    builds = []
    original = module.bilateral_affinity

    def counting(images, *args):
        builds.append(tuple(images.shape))
        return original(images, *args)

    monkeypatch.setattr(module, "bilateral_affinity", counting)
    images = random_blocks_image(12, 12, 0)
    probs = soft_masks(1, 2, 12, 12, 0, torch.float32)
    loss = DenseCRFLoss(weight=0.5, sigma_xy=4.0, scale_factor=0.5)
    bound = loss.bind(images)
    assert builds == [(1, 3, 6, 6)]  # built once, at the working resolution
    for _ in range(3):
        torch.testing.assert_close(bound(probs), loss(images, probs))
    assert len(builds) == 4  # one per unbound call, none per bound call


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss])
def test_cuda_inputs_give_cuda_gradients(cls) -> None:
    images = torch.cat([random_blocks_image(16, 20, s) for s in range(2)]).cuda()
    logits = torch.randn(2, 3, 16, 20, device="cuda", requires_grad=True)
    loss = cls(sigma_xy=5.0)
    value = loss(images, logits.softmax(1))
    value.backward()
    assert value.device.type == "cuda" and logits.grad.device.type == "cuda"
    cpu_logits = logits.detach().cpu().requires_grad_()
    cpu_value = loss(images.cpu(), cpu_logits.softmax(1))
    cpu_value.backward()
    torch.testing.assert_close(value.cpu(), cpu_value, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits.grad.cpu(), cpu_logits.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("cls", list(REGISTRY.values()))
def test_every_regularizer_is_keyed_by_its_declared_name_and_checks_its_weight(cls) -> None:
    assert REGISTRY[cls.name] is cls and build_regularizer(cls.name).weight == cls().weight
    for bad in (float("nan"), float("inf"), -1e-3):
        with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
            cls(weight=bad)
    image = random_blocks_image(6, 6, 0)
    labels = torch.full((1, 6, 6), 255)
    labels[0, 0, 0] = 1
    value = cls(weight=2.0)(image, soft_masks(1, 3, 6, 6, 0, torch.float32), None, labels)  # one signature for all
    assert torch.isfinite(value) and float(value) >= 0
