"""Soft self-labeling (Zhang & Boykov, CVPR 2025): the unaries and Potts relaxations against closed
forms and finite differences, the contrast-weighted grid against a brute-force loop, the pseudo-label
step on a real image with its scribble, the network step's gradient, training under bf16, bad settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import DATA, dense_affinity, load_image, random_blocks_image
from rloss.lattice import bilateral_affinity
from rloss.regularizers import REGISTRY, SelfLabelingLoss, build_regularizer
from rloss.regularizers.neighbourhoods import AffinityNeighbourhood, GridNeighbourhood
from rloss.regularizers.relaxations import RELAXATIONS, UNARIES, collision_cross_entropy

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def simplex(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).mul(2).softmax(-1)


def closed_forms(p: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    """The six relaxations written out with norms (independent of the products form)."""
    dot, norms = (p * q).sum(-1), p.norm(dim=-1) * q.norm(dim=-1)
    return {
        "bilinear": 1 - dot,
        "quadratic": 0.5 * (p - q).norm(dim=-1) ** 2,
        "normalized_quadratic": 1 - dot / norms,
        "collision_cross_entropy": -dot.log(),
        "collision_divergence": -(dot / norms).log(),
        "log_quadratic": -(1 - 0.5 * (p - q).norm(dim=-1) ** 2).log(),
    }


def test_relaxations_match_hand_values_closed_forms_and_finite_differences() -> None:
    p, q = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    by_hand = {
        "bilinear": 0.5, "quadratic": 0.25, "normalized_quadratic": 1 - math.sqrt(0.5),
        "collision_cross_entropy": math.log(2), "collision_divergence": 0.5 * math.log(2),
        "log_quadratic": -math.log(0.75),
    }
    assert set(RELAXATIONS) == set(by_hand)
    for name, value in by_hand.items():
        assert float(RELAXATIONS[name](p, q)) == pytest.approx(value, abs=1e-12), name
    p, q = simplex(2, 5, 4, seed=1), simplex(2, 5, 4, seed=2)
    for name, expected in closed_forms(p, q).items():
        relaxation = RELAXATIONS[name]
        torch.testing.assert_close(relaxation(p, q), expected, rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(relaxation(q, p), expected, rtol=1e-10, atol=1e-12, msg=f"{name} symmetric")
        a, b = p.clone().requires_grad_(), q.clone().requires_grad_()
        assert torch.autograd.gradcheck(relaxation, (a, b)), name
        if name != "bilinear" and name != "collision_cross_entropy":  # zero at p = q
            assert float(relaxation(p, p).abs().max()) < 1e-12, name


def test_unaries_match_closed_forms_and_finite_differences() -> None:
    y, sigma = simplex(3, 6, 5, seed=3), simplex(3, 6, 5, seed=4)
    expected = {
        "collision_cross_entropy": -(y * sigma).sum(-1).log(),
        "cross_entropy": -(y * sigma.log()).sum(-1),
        "reverse_cross_entropy": -(sigma * y.log()).sum(-1),
    }
    assert set(UNARIES) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(UNARIES[name](y, sigma), value, msg=name)
        inputs = (y.clone().requires_grad_(), sigma.clone().requires_grad_())
        assert torch.autograd.gradcheck(UNARIES[name], inputs), name


def test_collision_cross_entropy_is_ce_for_one_hot_y_constant_for_uniform_y_and_finite_at_zero() -> None:
    logits = torch.randn(10, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sigma, target = logits.softmax(-1), torch.arange(10) % 7
    onehot = F.one_hot(target, 7).double()
    cce = collision_cross_entropy
    torch.testing.assert_close(cce(onehot, sigma), F.cross_entropy(logits, target, reduction="none"))
    uniform = torch.full((10, 7), 1 / 7, dtype=torch.float64)
    torch.testing.assert_close(cce(uniform, sigma), torch.full((10,), math.log(7), dtype=torch.float64))
    torch.testing.assert_close(cce(sigma, onehot), cce(onehot, sigma))  # symmetric
    zero = torch.tensor([[0.0, 1.0]], requires_grad=True)
    value = collision_cross_entropy(torch.tensor([[1.0, 0.0]]), zero)  # y.sigma = 0
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(zero.grad).all()


def brute_force_grid(
    images: torch.Tensor, roi: torch.Tensor, y: torch.Tensor, relaxation: str, connectivity: int
) -> torch.Tensor:
    """sum_ij w_ij P(y_i, y_j) / #pairs per image by looping over every pixel and its forward neighbours."""
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    b, _, h, w = images.shape
    energies = []
    for n in range(b):
        pairs = []
        for i in range(h):
            for j in range(w):
                for dy, dx in offsets:
                    k, m = i + dy, j + dx
                    if 0 <= k < h and 0 <= m < w and roi[n, i, j] and roi[n, k, m]:
                        squared = float(((images[n, :, i, j] - images[n, :, k, m]) ** 2).sum())
                        pairs.append(((i, j), (k, m), squared, math.hypot(dy, dx)))
        s2 = sum(d for _, _, d, _ in pairs) / len(pairs)
        total = 0.0
        for a, c, d, length in pairs:
            value = float(RELAXATIONS[relaxation](y[n, :, a[0], a[1]], y[n, :, c[0], c[1]]))
            total += math.exp(-d / (2 * s2)) / length * value
        energies.append(total / len(pairs))
    return torch.tensor(energies, dtype=torch.float64)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_grid_energy_equals_a_brute_force_loop(connectivity: int, channels: int) -> None:
    g = torch.Generator().manual_seed(6)
    images = torch.rand(2, channels, 5, 6, generator=g, dtype=torch.float64) * 1000  # any units
    roi = torch.ones(2, 5, 6, dtype=torch.bool)
    roi[1, :, 4:] = False  # padding: its pairs count nowhere, not even in s^2
    y = simplex(2, 5, 6, 3, seed=7).permute(0, 3, 1, 2)
    for relaxation in ("bilinear", "collision_divergence"):
        grid = GridNeighbourhood(images, roi, RELAXATIONS[relaxation], connectivity)
        expected = brute_force_grid(images, roi, y, relaxation, connectivity)
        torch.testing.assert_close(grid.energy(y).double(), expected, rtol=1e-5, atol=1e-7)
    assert grid.num_pairs.tolist() == ([49, 31] if connectivity == 4 else [89, 55])


def test_dense_neighbourhood_equals_the_explicit_affinity_sums() -> None:
    image = random_blocks_image(6, 5, 8).double()
    roi = torch.ones(1, 6, 5, dtype=torch.bool)
    roi[0, 0, :2] = False
    y = simplex(1, 6, 5, 3, seed=9).permute(0, 3, 1, 2)
    w = torch.from_numpy(dense_affinity(image, 20.0, 3.0))  # W_ii = 1 included, as in the DenseCRF loss
    m = roi.flatten().double()
    s = y.reshape(3, -1).T
    dots = s @ s.T
    norms = (s * s).sum(1)
    expected = {
        "bilinear": (m[:, None] * m[None] * w * (1 - dots)).sum(),
        "quadratic": (m[:, None] * m[None] * w * 0.5 * (norms[:, None] + norms[None] - 2 * dots)).sum(),
    }
    mass = m @ w @ m
    affinity = bilateral_affinity(image, 20.0, 3.0, "exact")
    for name, value in expected.items():
        energy = AffinityNeighbourhood(affinity, roi, name, torch.float64).energy(y)
        torch.testing.assert_close(energy, (value / mass)[None], rtol=1e-9, atol=1e-12, msg=name)
    with pytest.raises(ValueError, match="relaxation must be one of 'bilinear', 'quadratic'"):
        AffinityNeighbourhood(affinity, roi, "collision_divergence")


def real_example(factor: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """2011_003223 at 1/factor: image (1, 3, h, w), scribble (1, h, w) (nearest; 255 unlabeled),
    and blurred-scribble probabilities (1, 21, h, w) standing in for a network."""
    image = load_image("2011_003223", factor)
    h, w = image.shape[2:]
    scribble = torch.from_numpy(np.array(Image.open(DATA / "2011_003223_scribble.png"))).long()
    scribble = F.interpolate(scribble[None, None].float(), size=(h, w), mode="nearest")[0].long()
    labeled = scribble != 255
    onehot = F.one_hot(torch.where(labeled, scribble, 0), 21).permute(0, 3, 1, 2).float() * labeled[:, None]
    blurred = F.avg_pool2d(onehot, 31, stride=1, padding=15, count_include_pad=False)
    return image, scribble, torch.softmax(0.5 * torch.log(blurred + 1e-6), 1)


def test_pseudo_label_step_decreases_its_objective_on_a_real_image_and_keeps_the_scribbles() -> None:
    image, scribble, probs = real_example(5)
    objectives = []
    for steps in (0, 4, 15):
        loss = SelfLabelingLoss(steps=steps)
        y = loss.pseudo_labels(image, probs, None, scribble)
        objectives.append(float(loss.objective(image, probs, y, None, scribble)))
    assert objectives[0] > objectives[1] > objectives[2], objectives
    assert float(y.min()) >= 0 and float((y.sum(1) - 1).abs().max()) < 1e-5  # on the simplex
    labeled = scribble != 255
    assert torch.equal(y.argmax(1)[labeled], scribble[labeled]) and bool((y.amax(1)[labeled] == 1).all())
    assert float((y - probs).abs().amax()) > 0.1  # it moved


def test_network_gradient_reaches_probs_only_and_vanishes_where_y_is_uniform() -> None:
    g = torch.Generator().manual_seed(10)
    images = torch.rand(2, 3, 8, 9, generator=g) * 255
    logits = torch.randn(2, 4, 8, 9, generator=g)
    logits[0, :, 2:5, 3:6] = 0.7  # uniform sigma -> uniform y with steps=0 (y starts at sigma)
    logits.requires_grad_()
    loss = SelfLabelingLoss(weight=0.5, steps=0)
    loss(images, logits.softmax(1)).backward()
    assert float(logits.grad[0, :, 2:5, 3:6].abs().max()) < 1e-9
    assert float(logits.grad[1].abs().max()) > 1e-4
    # with steps: the gradient is that of eta x mean H_CCE(y, sigma) with y fixed
    labels = torch.full((2, 8, 9), 255)
    labels[0, 0, :4], labels[1, 7, 2:] = 1, 3
    labels[1, :2, :] = 254  # padding
    roi = labels != 254
    loss = SelfLabelingLoss(weight=0.5, steps=5)
    logits.grad = None
    loss(images, logits.softmax(1), roi, labels).backward()
    y = loss.pseudo_labels(images, logits.detach().softmax(1), roi, labels)
    other = logits.detach().clone().requires_grad_()
    free = roi & (labels == 255)
    per_pixel = collision_cross_entropy(y.movedim(1, -1), other.softmax(1).movedim(1, -1)) * free
    (0.5 * (per_pixel.sum((1, 2)) / free.sum((1, 2))).mean()).backward()
    torch.testing.assert_close(logits.grad, other.grad)
    assert float(logits.grad[1, :, :2].abs().max()) == 0.0  # padding gets nothing


def test_padding_and_labels_none() -> None:
    g = torch.Generator().manual_seed(11)
    images = torch.rand(1, 3, 10, 10, generator=g) * 255
    probs = torch.randn(1, 3, 10, 10, generator=g).softmax(1)
    roi = torch.ones(1, 10, 10, dtype=torch.bool)
    roi[..., 7:] = False
    loss = SelfLabelingLoss(steps=4)
    reference = loss(images, probs, roi)
    images2, probs2 = images.clone(), probs.clone()
    images2[..., 7:] = 0.0
    probs2[..., 7:] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    torch.testing.assert_close(loss(images2, probs2, roi), reference)  # padding takes no part
    labels = torch.full((1, 10, 10), 255)
    torch.testing.assert_close(loss(images, probs, roi, labels), reference)  # None = all unlabeled


def test_grayscale_and_multichannel_images_and_reduced_resolution() -> None:
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 3, 16, 12, generator=g, requires_grad=True)
    for channels, scale in ((1, 1.0), (5, 0.5)):
        images = torch.rand(2, channels, 16, 12, generator=g) * 4000 - 500  # MRI-like units
        loss = SelfLabelingLoss(steps=3, scale_factor=scale)
        value = loss(images, logits.softmax(1))
        value.backward()
        assert torch.isfinite(value) and float(logits.grad.abs().sum()) > 0
        y = loss.pseudo_labels(images, logits.detach().softmax(1))
        assert y.shape == (2, 3, round(16 * scale), round(12 * scale))


@pytest.mark.parametrize(("neighbourhood", "relaxation"), [("dense", "bilinear"), ("window", "quadratic")])
def test_affinity_neighbourhoods_train_on_rgb_and_grayscale(neighbourhood: str, relaxation: str) -> None:
    rgb = random_blocks_image(12, 10, 13)
    gray = rgb.mean(1, keepdim=True) / 255  # 0..1 units, sigma_rgb in them
    logits = torch.randn(1, 3, 12, 10, generator=torch.Generator().manual_seed(13), requires_grad=True)
    for images, sigma_rgb in ((rgb, 15.0), (gray, 0.06)):
        loss = SelfLabelingLoss(
            neighbourhood=neighbourhood, relaxation=relaxation, steps=3, sigma_rgb=sigma_rgb, sigma_xy=5.0, radius=2
        )
        logits.grad = None
        value = loss(images, logits.softmax(1))
        value.backward()
        assert torch.isfinite(value) and float(logits.grad.abs().sum()) > 0


def test_autocast_bf16_computes_in_float32() -> None:
    image, scribble, probs = real_example(8)
    logits = probs.clamp_min(1e-6).log().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = SelfLabelingLoss(steps=3)(image, logits.softmax(1).bfloat16(), None, scribble)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_bf16_mixed_training_step_has_finite_loss(voc_root, tmp_path) -> None:
    from rloss.data.voc import VOCScribbleDataModule
    from rloss.models import ScribbleSegmentation

    assert REGISTRY["selflabel"] is SelfLabelingLoss and isinstance(build_regularizer("selflabel"), SelfLabelingLoss)
    model = ScribbleSegmentation(
        num_classes=21, backbone="tiny", weights_backbone=None, regularizers=[SelfLabelingLoss(steps=3)]
    )
    data = VOCScribbleDataModule(str(voc_root), crop_size=32, batch_size=2, num_workers=0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    assert "train/loss_SelfLabelingLoss" in metrics and all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relaxation": "potts"}, "relaxation must be one of 'bilinear', 'quadratic', 'normalized_quadratic'"),
        ({"unary": "kl"}, "unary must be one of 'collision_cross_entropy'"),
        ({"neighbourhood": "grid6"}, "neighbourhood must be one of 'grid4', 'grid8', 'dense', 'window'"),
        ({"neighbourhood": "dense"}, "relaxation must be one of 'bilinear', 'quadratic' with neighbourhood='dense'"),
        ({"steps": -1}, "steps must be an integer >= 0"),
        ({"steps": 2.5}, "steps must be an integer >= 0"),
        ({"step_size": 0}, "step_size must be a finite number > 0"),
        ({"weight": float("nan")}, "weight must be a finite number >= 0"),
        ({"weight": -0.3}, "weight must be a finite number >= 0"),
        ({"potts_weight": float("nan")}, "potts_weight must be a finite number >= 0"),
        ({"potts_weight": -6}, "potts_weight must be a finite number >= 0"),
        ({"scale_factor": 2}, "scale_factor must be in"),
    ],
)
def test_bad_settings_raise_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        SelfLabelingLoss(**kwargs)
    assert "\n" not in str(error.value)


def test_bad_inputs_raise_one_line_errors() -> None:
    images, probs = torch.rand(1, 3, 6, 6) * 255, torch.full((1, 2, 6, 6), 0.5)
    loss = SelfLabelingLoss(steps=1)
    bad = ((torch.full((1, 6, 6), 7), "class id 7"), (torch.full((1, 5, 6), 255), "labels must have shape"))
    for labels, message in bad:
        with pytest.raises(ValueError, match=message) as error:
            loss(images, probs, None, labels)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="images contains 1 NaN"):
        loss(images.index_put((torch.tensor([0]),) * 4, torch.tensor(float("nan"))), probs)


@CUDA
def test_cuda_pseudo_label_steps_do_not_synchronise() -> None:
    import warnings

    images = random_blocks_image(32, 32, 14).cuda()
    probs = torch.randn(1, 4, 32, 32, device="cuda").softmax(1)
    labels = torch.full((1, 32, 32), 255, device="cuda")
    labels[0, 3, 3:9] = 2

    def synchronisations(steps: int) -> int:
        loss = SelfLabelingLoss(steps=steps)
        loss(images, probs, None, labels)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = loss(images, probs, None, labels)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert value.device.type == "cuda"
        return len(caught)

    assert synchronisations(10) == synchronisations(0)
