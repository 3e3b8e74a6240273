"""The Numba permutohedral lattice against exact references."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from helpers import REAL_IMAGES, dense_affinity, load_image, random_blocks_image
from rloss.lattice import (
    ExactAffinity,
    bilateral_affinity,
    bilateral_features,
    bilateral_filter,
    get_num_threads,
    set_num_threads,
)


def exact_bilateral_filter(images, values, sigma_rgb, sigma_xy):
    """The brute-force reference (``backend="exact"``)."""
    return bilateral_filter(images, values, sigma_rgb, sigma_xy, backend="exact")


def accuracy(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(overall ratio sum(approx)/sum(exact), median per-pixel relative error)."""
    ratio = float(approx.sum() / exact.sum())
    median = float(((approx - exact).abs() / exact.abs().clamp(min=1e-12)).median())
    return ratio, median


@pytest.mark.parametrize("name", REAL_IMAGES)
@pytest.mark.parametrize("sigma_xy", [100.0, 40.0])
def test_lattice_matches_exact_on_real_images(name: str, sigma_xy: float) -> None:
    factor = 4
    image = load_image(name, factor)
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.ones(1, 1, *image.shape[2:]), torch.rand(1, 3, *image.shape[2:], generator=g)], 1)
    approx = bilateral_filter(image, values, 15.0, sigma_xy / factor)
    exact = exact_bilateral_filter(image, values, 15.0, sigma_xy / factor)
    ratio, median = accuracy(approx, exact)
    assert 0.9 <= ratio <= 1.1, ratio
    assert median <= 0.10, median


@pytest.mark.parametrize("seed", [0, 1])
def test_lattice_matches_exact_on_synthetic_images(seed: int) -> None:
    image = random_blocks_image(40, 52, seed)
    values = torch.rand(1, 2, 40, 52, generator=torch.Generator().manual_seed(seed)) + 0.1
    exact = exact_bilateral_filter(image, values, 20.0, 8.0)
    ratio, median = accuracy(bilateral_filter(image, values, 20.0, 8.0), exact)
    assert 0.9 <= ratio <= 1.1, ratio
    assert median <= 0.10, median


def test_exact_filter_equals_explicit_matrix() -> None:
    image = random_blocks_image(7, 9, 3)
    values = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    w = dense_affinity(image, 10.0, 3.0)
    expected = values[0].reshape(2, -1).numpy() @ w.T
    features = bilateral_features(image, 10.0, 3.0, torch.float64)
    out = ExactAffinity(features, chunk_size=5).filter(values)
    np.testing.assert_allclose(out[0].reshape(2, -1).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_transpose_is_the_transposed_matrix() -> None:
    image = random_blocks_image(6, 5, 4)
    n = 30
    lattice = bilateral_affinity(image, 12.0, 2.0, "numba")
    eye = torch.eye(n, dtype=torch.float64).reshape(1, n, 6, 5)
    w = lattice.filter(eye).reshape(n, n).T  # column j = W e_j
    w_t = lattice.filter(eye, transpose=True).reshape(n, n).T
    torch.testing.assert_close(w_t, w.T, rtol=1e-9, atol=1e-12)
    v = torch.randn(1, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(lattice.filter(v).reshape(3, n), v.reshape(3, n) @ w.T)
    torch.testing.assert_close(lattice.filter(v, transpose=True).reshape(3, n), v.reshape(3, n) @ w)


def test_batch_equals_single_images_and_threads_agree() -> None:
    images = torch.cat([random_blocks_image(20, 24, s) for s in range(3)])
    values = torch.rand(3, 4, 20, 24)
    previous = get_num_threads()
    try:
        set_num_threads(1)
        one = bilateral_filter(images, values, 15.0, 6.0)
        set_num_threads(2)
        two = bilateral_filter(images, values, 15.0, 6.0)
    finally:
        set_num_threads(previous)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    for b in range(3):
        single = bilateral_filter(images[b : b + 1], values[b : b + 1], 15.0, 6.0)
        torch.testing.assert_close(one[b : b + 1], single, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_round_trip(dtype: torch.dtype) -> None:
    image = random_blocks_image(10, 12, 5)
    values = torch.rand(1, 2, 10, 12, dtype=torch.float64)
    reference = bilateral_filter(image, values, 15.0, 4.0)
    out = bilateral_filter(image, values.to(dtype), 15.0, 4.0)
    assert out.dtype == dtype and out.device == values.device
    tol = {torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(out.double(), reference, rtol=tol, atol=tol * float(reference.abs().max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip() -> None:
    image = random_blocks_image(10, 12, 5).cuda()
    values = torch.rand(1, 2, 10, 12, device="cuda", dtype=torch.float16)
    out = bilateral_filter(image, values, 15.0, 4.0)
    assert out.device == values.device and out.dtype == values.dtype
    torch.testing.assert_close(out.cpu(), bilateral_filter(image.cpu(), values.cpu(), 15.0, 4.0))


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (2, 3)])
def test_tiny_images(shape: tuple[int, int]) -> None:
    image = torch.full((1, 3, *shape), 100.0)
    values = torch.rand(1, 1, *shape, dtype=torch.float64)
    out = bilateral_filter(image, values, 15.0, 3.0)
    exact = exact_bilateral_filter(image, values, 15.0, 3.0)
    assert torch.isfinite(out).all()
    assert 0.7 <= float(out.sum() / exact.sum()) <= 1.3


@pytest.mark.parametrize(
    ("images", "values", "kwargs", "message"),
    [
        (torch.rand(1, 3, 4, 4) * 255, torch.rand(1, 2, 4, 5), {}, "values has"),
        (torch.rand(1, 4, 4) * 255, torch.rand(1, 2, 4, 4), {}, r"images must have shape \(B, C, H, W\)"),
        (torch.rand(1, 0, 4, 4), torch.rand(1, 2, 4, 4), {}, "images must be non-empty"),
        (torch.rand(1, 3, 4, 4) * 255, torch.rand(2, 4, 4), {}, r"values must have shape \(B, C, H, W\)"),
        (torch.randint(0, 255, (1, 3, 4, 4)), torch.rand(1, 2, 4, 4), {}, "images must be float or uint8"),
        (torch.full((1, 3, 4, 4), float("nan")), torch.rand(1, 2, 4, 4), {}, "images contains"),
        (torch.rand(1, 3, 4, 4) * 255, torch.full((1, 2, 4, 4), float("inf")), {}, "values contains"),
        (torch.rand(1, 3, 4, 4) * 255, torch.rand(1, 2, 4, 4), {"sigma_rgb": 0.0}, "sigma_rgb must be"),
        (torch.rand(1, 3, 4, 4) * 255, torch.rand(1, 2, 4, 4), {"sigma_xy": -1.0}, "sigma_xy must be"),
        (torch.rand(1, 3, 4, 4) * 255, torch.randint(0, 3, (1, 2, 4, 4)), {}, "floating-point"),
    ],
)
def test_bad_input_is_named(images, values, kwargs, message) -> None:
    sigmas = {"sigma_rgb": 15.0, "sigma_xy": 5.0} | kwargs
    for backend in ("numba", "torch", "exact"):
        with pytest.raises(ValueError, match=message):
            bilateral_filter(images, values, **sigmas, backend=backend)


class _FilterDataset(Dataset):
    def __init__(self) -> None:
        self.images = torch.cat([random_blocks_image(16, 16, s) for s in range(4)])

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return bilateral_filter(self.images[i : i + 1], torch.ones(1, 1, 16, 16), 15.0, 4.0)[0]


@pytest.mark.timeout(240)
def test_dataloader_fork_workers_next_to_the_lattice() -> None:
    dataset = _FilterDataset()
    parent = torch.stack([dataset[i] for i in range(4)])  # the lattice (and its threads) ran in the parent
    bilateral_filter(dataset.images, torch.ones(4, 1, 16, 16), 15.0, 4.0)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="fork")
    children = torch.cat(list(loader))
    torch.testing.assert_close(children, parent, rtol=0, atol=0)


@pytest.mark.slow
def test_numba_cache_goes_to_a_writable_dir(tmp_path) -> None:
    code = (
        "import torch; from rloss.lattice import bilateral_filter; "
        "bilateral_filter(torch.full((1, 3, 3, 3), 9.0), torch.ones(1, 1, 3, 3), 15.0, 2.0)"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    cached = list((tmp_path / "numba").rglob("*.nbi"))
    assert cached, "no Numba index files written to NUMBA_CACHE_DIR"


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_too_small_sigma_for_the_image_is_named(backend: str) -> None:
    image = random_blocks_image(8, 3000, 0)
    with pytest.raises(ValueError, match="sigma_xy / sigma_rgb"):
        bilateral_filter(image, torch.ones(1, 1, 8, 3000), 15.0, 0.01, backend=backend)


def test_filter_and_transpose_share_the_splat_exactly() -> None:
    image = random_blocks_image(12, 17, 6)
    lattice = bilateral_affinity(image, 15.0, 4.0, "numba")
    values = torch.rand(1, 11, 12, 17)
    forward, transposed = lattice.filter_and_transpose(values)
    torch.testing.assert_close(forward, lattice.filter(values), rtol=0, atol=0)
    torch.testing.assert_close(transposed, lattice.filter(values, transpose=True), rtol=0, atol=0)
