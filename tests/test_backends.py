"""The affinity back-ends behind one interface: the torch lattice equals the Numba lattice (the same
algorithm) on real images, losses and the mean-field CRF agree across back-ends, bad input is named
the same way everywhere, CUDA keeps tensors on the device."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from helpers import REAL_IMAGES, load_image, random_blocks_image
from rloss import lattice
from rloss.crf import DenseCRF
from rloss.lattice import (
    BACKENDS,
    NumbaLattice,
    TorchLattice,
    bilateral_affinity,
    bilateral_features,
    bilateral_filter,
    gaussian_affinity,
)
from rloss.regularizers import DenseCRFLoss, NormalizedCutLoss

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LATTICES = ("numba", "torch")


def relative_error(approx: torch.Tensor, reference: torch.Tensor) -> float:
    return float((approx - reference).abs().max() / reference.abs().max())


def soft_logits(image: torch.Tensor, k: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth random logits (1, K, H, W) at the image's size."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(image.shape[0], k, 6, 8, generator=g, dtype=dtype)
    return 3 * F.interpolate(coarse, size=image.shape[2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_torch_lattice_equals_numba_lattice_on_real_images(name: str) -> None:
    image = load_image(name, 3)
    features = bilateral_features(image, 15.0, 100 / 3, torch.float32)
    numba, torch_lattice = NumbaLattice(features), TorchLattice(features)
    assert numba.num_vertices == [torch_lattice.num_vertices]  # the same vertex set
    values = torch.rand(1, 21, *image.shape[2:], generator=torch.Generator().manual_seed(0))
    for transpose in (False, True):
        assert relative_error(torch_lattice.filter(values, transpose), numba.filter(values, transpose)) < 2e-6
    wide = values.double()
    for ours, theirs in zip(torch_lattice.filter_and_transpose(wide), numba.filter_and_transpose(wide), strict=True):
        assert relative_error(ours, theirs) < 1e-12  # float64: equal but for summation order


def test_torch_lattice_is_asymmetric_like_numba() -> None:
    """W^T by the reverse-order blur is the transposed matrix, as on the Numba lattice."""
    image = random_blocks_image(6, 5, 4)
    affinity = bilateral_affinity(image, 12.0, 2.0, "torch")
    eye = torch.eye(30, dtype=torch.float64).reshape(1, 30, 6, 5)
    w = affinity.filter(eye).reshape(30, 30).T
    w_t = affinity.filter(eye, transpose=True).reshape(30, 30).T
    torch.testing.assert_close(w_t, w.T, rtol=1e-9, atol=1e-12)
    assert float((w - w.T).abs().max()) > 1e-4


@pytest.mark.parametrize("cls", [DenseCRFLoss, NormalizedCutLoss])
def test_losses_and_gradients_agree_across_lattices(cls) -> None:
    image = load_image("2011_003223", 4)
    roi = torch.ones(1, *image.shape[2:], dtype=torch.bool)
    roi[:, :, :10] = False  # a partial ROI (padding on the left)
    results = []
    for backend in LATTICES:
        logits = soft_logits(image, 4, seed=1).requires_grad_()
        value = cls(sigma_rgb=15.0, sigma_xy=25.0, backend=backend)(image, logits.softmax(1), roi)
        value.backward()
        results.append((value.detach(), logits.grad))
    (numba_value, numba_grad), (torch_value, torch_grad) = results
    torch.testing.assert_close(torch_value, numba_value, rtol=1e-5, atol=0)
    assert relative_error(torch_grad, numba_grad) < 1e-4


def test_mean_field_agrees_across_lattices() -> None:
    image = load_image("2008_000003", 4)
    probs = soft_logits(image, 3, seed=2).softmax(1)
    refined = [DenseCRF(iterations=3, sxy_app=20.0, backend=b)(image, probs) for b in LATTICES]
    assert relative_error(refined[1], refined[0]) < 1e-4
    assert not torch.allclose(refined[0], probs, atol=1e-2)  # the CRF did change the labeling


def test_torch_lattice_gradcheck_float64() -> None:
    image = random_blocks_image(5, 6, 7)
    roi = torch.ones(1, 5, 6, dtype=torch.bool)
    roi[0, 0, :2] = False
    logits = torch.randn(1, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = DenseCRFLoss(sigma_rgb=25.0, sigma_xy=3.0, backend="torch")
    assert torch.autograd.gradcheck(lambda x: loss.energy(image, x.softmax(1), roi), (logits.requires_grad_(),))


def test_torch_batch_equals_images_one_by_one() -> None:
    """One build for a batch of different images: each image keeps its own lattice."""
    images = torch.cat([load_image(name, 6) for name in REAL_IMAGES[1:3]])  # two 62 x 83 images
    values = torch.rand(2, 5, *images.shape[2:], dtype=torch.float64)
    batch = bilateral_affinity(images, 15.0, 20.0, "torch")
    out = batch.filter(values)
    singles = [bilateral_affinity(images[b : b + 1], 15.0, 20.0, "torch") for b in range(2)]
    assert batch.num_vertices == sum(s.num_vertices for s in singles)
    for b, single in enumerate(singles):
        torch.testing.assert_close(out[b : b + 1], single.filter(values[b : b + 1]), rtol=1e-12, atol=1e-14)


def test_torch_lattice_deterministic_mode_gives_the_same_bits() -> None:
    image = load_image("2007_000032", 4)
    values = torch.rand(1, 21, *image.shape[2:])
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [bilateral_affinity(image, 15.0, 25.0, "torch").filter_and_transpose(values) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(previous)
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_torch_lattice_refuses_keys_it_cannot_pack() -> None:
    features = torch.tensor([[[0.0] * 5, [3000.0] * 5]])  # a range that needs more than 63 key bits
    with pytest.raises(ValueError, match="sigma_xy / sigma_rgb"):
        TorchLattice(features)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_bad_features_are_named_on_every_backend(backend: str) -> None:
    with pytest.raises(ValueError, match="NaN/inf"):
        gaussian_affinity(torch.tensor([[[0.0, 1.0], [float("nan"), 2.0]]]), backend)
    with pytest.raises(ValueError, match=r"features must have shape \(B, N, d\)"):
        gaussian_affinity(torch.zeros(1, 0, 5), backend)
    affinity = gaussian_affinity(torch.rand(2, 12, 3), backend)
    with pytest.raises(ValueError, match=r"values must have shape \(B=2, C, N=12\)"):
        affinity.filter(torch.rand(2, 3, 11))


@pytest.mark.parametrize("where", ["filter", "densecrf", "ncut", "crf"])
def test_unknown_backend_is_named(where: str) -> None:
    image = random_blocks_image(4, 4, 0)
    build = {
        "filter": lambda: bilateral_filter(image, torch.rand(1, 1, 4, 4), 15.0, 3.0, backend="cuda"),
        "densecrf": lambda: DenseCRFLoss(backend="cuda"),
        "ncut": lambda: NormalizedCutLoss(backend="cuda"),
        "crf": lambda: DenseCRF(backend="cuda"),
    }[where]
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'exact', 'numba', 'torch', got 'cuda'"):
        build()


def test_auto_is_numba_on_cpu() -> None:
    assert isinstance(bilateral_affinity(random_blocks_image(4, 4, 0), 15.0, 3.0), NumbaLattice)


def test_numba_threads_are_an_explicit_setting() -> None:
    features = bilateral_features(random_blocks_image(8, 8, 0), 15.0, 3.0, torch.float32)
    previous = lattice.get_num_threads()
    try:
        lattice.set_num_threads(1)
        assert NumbaLattice(features).num_threads == 1
        assert NumbaLattice(features, num_threads=2).num_threads == 2
    finally:
        lattice.set_num_threads(previous)
    with pytest.raises(ValueError, match="num_threads"):
        lattice.set_num_threads(0)


def test_demo_threads_reach_the_lattice(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from rloss.tools import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda args, output: seen.append(lattice.get_num_threads()) or 0)
    previous = lattice.get_num_threads()
    lattice.set_num_threads(2)
    try:
        assert demo.main(["--threads", "1", "--output", str(tmp_path)]) == 0
        assert seen == [1] and lattice.get_num_threads() == 2  # set for the run, restored after
    finally:
        lattice.set_num_threads(previous)


@CUDA
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_cuda_backends_keep_tensors_on_the_device(backend: str) -> None:
    image = load_image("2011_003223", 8)
    logits = soft_logits(image, 3, seed=0)
    cpu_logits = logits.clone().requires_grad_()
    cpu = DenseCRFLoss(sigma_xy=12.0, backend=backend)(image, cpu_logits.softmax(1))
    cpu.backward()
    gpu_logits = logits.cuda().requires_grad_()
    gpu = DenseCRFLoss(sigma_xy=12.0, backend=backend)(image.cuda(), gpu_logits.softmax(1))
    gpu.backward()
    assert gpu.device.type == "cuda" and gpu_logits.grad.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6)
    assert relative_error(gpu_logits.grad.cpu(), cpu_logits.grad) < 1e-3
    affinity = bilateral_affinity(image.cuda(), 15.0, 12.0, backend)
    out = affinity.filter(torch.rand(1, 2, *image.shape[2:], device="cuda"))
    assert out.device.type == "cuda"


@CUDA
def test_cuda_auto_is_the_torch_lattice_and_deterministic() -> None:
    image = load_image("2007_000063", 4).cuda()
    assert isinstance(bilateral_affinity(image, 15.0, 25.0), TorchLattice)
    values = torch.rand(1, 21, *image.shape[2:], device="cuda")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = (bilateral_affinity(image, 15.0, 25.0).filter(values) for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first, second)
    numba = bilateral_affinity(image.cpu(), 15.0, 25.0, "numba").filter(values.cpu())
    assert relative_error(first.cpu(), numba) < 1e-5


class _GradientProbe(pl.Callback):
    """Records, before each optimizer step, whether every gradient is finite and in its parameter's dtype."""

    def __init__(self) -> None:
        self.steps: list[bool] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [(p, p.grad) for p in pl_module.parameters() if p.grad is not None]
        self.steps.append(bool(grads) and all(g.dtype == p.dtype and torch.isfinite(g).all() for p, g in grads))


PRECISIONS = [
    pytest.param("cpu", "bf16-mixed", id="cpu-bf16"),
    pytest.param("gpu", "bf16-mixed", id="cuda-bf16", marks=CUDA),
    pytest.param("gpu", "16-mixed", id="cuda-fp16", marks=CUDA),
]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize(("accelerator", "precision"), PRECISIONS)
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_mixed_precision_fit_with_every_regularizer(
    backend: str, accelerator: str, precision: str, voc_root, tmp_path
) -> None:
    from rloss.data.voc import VOCScribbleDataModule
    from rloss.models import ScribbleSegmentation
    from rloss.regularizers import GatedCRFLoss, SizeLoss

    regularizers = [
        DenseCRFLoss(weight=1e-2, sigma_xy=10.0, backend=backend),
        NormalizedCutLoss(weight=1e-2, sigma_xy=10.0, scale_factor=0.5, backend=backend),
        GatedCRFLoss(weight=1e-2, sigma_xy=4.0, radius=2, scale_factor=1.0),
        SizeLoss(weight=1e-2),
    ]
    model = ScribbleSegmentation(
        num_classes=21, backbone="lraspp_mobilenet_v3_large", weights_backbone=None, regularizers=regularizers
    )
    data = VOCScribbleDataModule(str(voc_root), crop_size=32, batch_size=2, num_workers=0)
    probe = _GradientProbe()
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[probe], default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    assert probe.steps == [True, True]
    assert all(torch.isfinite(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/"))


@CUDA
def test_cuda_torch_lattice_synchronises_once_per_build_and_never_per_filter() -> None:
    import warnings

    image = load_image("2007_000323", 4).cuda()
    features = bilateral_features(image, 15.0, 25.0, torch.float32)
    h, w = image.shape[2:]
    bounds = ([0.0] * 5, [(w - 1) / 25.0, (h - 1) / 25.0] + [255 / 15.0] * 3)
    values = torch.rand(1, 21, h * w, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            affinity = TorchLattice(features, bounds)
            built = len(caught)
            affinity.filter_and_transpose(values)
            affinity.filter(values, transpose=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert built <= 1 and len(caught) == built, [str(w.message) for w in caught]
