"""Speed and accuracy of the Numba permutohedral lattice, against pydensecrf2 and the exact filter.

Prints a markdown table and (full runs) saves it to ``benchmarks/results/lattice.md``:

- per image, 257x257 and 513x513 real VOC images (tests/data/*.jpg, bilinear resize), K = 21 smooth
  random softmax probabilities, one core: lattice build, 21-channel filter, DenseCRF energy
  forward + backward; pydensecrf2 (C++ permutohedral lattice) doing the same work, all 21 channels
  in one pass and one class at a time (as the original rloss C++ did);
- a batch of 12 at 257x257 on 1 and 2 threads: build + filter, and DenseCRF forward + backward;
- accuracy against the exact filter (``backend="exact"``) on the real images downsampled 4x;
- the torch back-end against the Numba one: a 513x513 build + 21-channel filter and DenseCRF
  forward + backward on 12 x 21 x 257^2, on the CPU and, when CUDA is available, with the torch
  back-end on the GPU against the Numba one on the host (its copies included), with peak memory.

Timings are medians of repetitions in which ours and the peer run interleaved (their order
alternates), so a speed ratio is only ever taken between numbers of the same run. Usage:

    python benchmarks/lattice.py            # full run (about 1-3 minutes), writes the results file
    python benchmarks/lattice.py --quick    # smoke run: fewer images and repetitions, prints only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numba
import numpy as np
import pydensecrf.densecrf as dcrf
import pydensecrf.eigen as eigen
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

import rloss
import rloss.lattice as lattice
from rloss.lattice import bilateral_affinity, bilateral_features, bilateral_filter
from rloss.lattice.geometry import elevation_scales, key_fields
from rloss.lattice.numba_lattice import numba_kernels
from rloss.regularizers import DenseCRFLoss, GatedCRFLoss, Regularizer
from rloss.utils.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "lattice.md"
K = 21
SIGMA_RGB = 15.0
SIGMA_XY = {513: 100.0, 257: 50.0}  # rloss's 100 at 513; at 257 as with scale_factor 0.5
BATCH = 12
ACCURACY_FACTOR = 4
ACCURACY_SIGMA_XY = (100.0, 40.0)  # at full resolution; divided by ACCURACY_FACTOR


# ----------------------------------------------------------------------------- timing

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
Sections = dict[str, float]  # seconds per named section of one repetition


class Stopwatch:
    """Accumulates, per named section of one repetition, wall time (time.perf_counter) and this
    process's CPU time (time.process_time, which time-sharing with other processes leaves out)."""

    def __init__(self) -> None:
        self.seconds: dict[str, Sections] = {clock: defaultdict(float) for clock in CLOCKS}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = {clock: read() for clock, read in CLOCKS.items()}
        try:
            yield
        finally:
            for clock, read in CLOCKS.items():
                self.seconds[clock][name] += read() - start[clock]


Task = Callable[[Stopwatch, int], None]  # (stopwatch, repetition index)


def measure(tasks: Sequence[Task], reps: int) -> dict[str, list[Sections]]:
    """Per clock, the sections of every repetition.

    Each task runs once untimed first (Numba compilation, allocator warm-up); then every repetition
    runs all tasks, in forward order on even repetitions and reversed on odd ones, so that ours and
    the peer alternate.
    """
    for task in tasks:
        task(Stopwatch(), 0)
    samples: dict[str, list[Sections]] = {clock: [] for clock in CLOCKS}
    for rep in range(reps):
        watch = Stopwatch()
        for task in tasks if rep % 2 == 0 else tasks[::-1]:
            task(watch, rep)
        for clock in CLOCKS:
            samples[clock].append(dict(watch.seconds[clock]))
    return samples


def median(samples: Sequence[Sections], quantity: Callable[[Sections], float]) -> float:
    """Median over repetitions of a quantity computed within each repetition (a time or a ratio of
    times measured side by side)."""
    return statistics.median(quantity(s) for s in samples)


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """Elapsed time and a message on stderr (the tables go to stdout)."""
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


Threads = tuple[int, int]  # (lattice threads, torch threads)


def set_threads(lattice_threads: int, torch_threads: int | None = None) -> None:
    """Threads of the lattice (images of a batch in parallel) and of torch (default: the same)."""
    lattice.set_num_threads(lattice_threads)
    torch.set_num_threads(torch_threads or lattice_threads)


# ----------------------------------------------------------------------------- inputs


def load_image(path: Path, size: tuple[int, int] | None = None, factor: int = 1) -> Tensor:
    """(1, 3, H, W) float RGB, resized (bilinear, antialiased) to ``size`` or by 1/factor, rounded to
    integers so that pydensecrf2's uint8 input is exactly the same image."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    image = torch.from_numpy(array).permute(2, 0, 1)[None]
    if size is None:
        size = (image.shape[2] // factor, image.shape[3] // factor)
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return image.round().clamp(0, 255).contiguous()


def smooth_probs(batch: int, h: int, w: int, seed: int) -> Tensor:
    """(batch, K, h, w) "real-looking" probabilities: softmax of upsampled low-resolution random logits."""
    g = torch.Generator().manual_seed(seed)
    logits = 4.0 * torch.randn(batch, K, 8, 8, generator=g)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1).contiguous()


def batch_of(images: Tensor, n: int) -> Tensor:
    """n images cycled from ``images`` (B, 3, H, W), every second pass mirrored left-right."""
    picks = [images[i % len(images)] for i in range(n)]
    picks = [p.flip(-1) if (i // len(images)) % 2 else p for i, p in enumerate(picks)]
    return torch.stack(picks).contiguous()


def hwc_uint8(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) 0..255 -> C-contiguous (H, W, 3) uint8, pydensecrf2's image layout."""
    return np.ascontiguousarray(image[0].permute(1, 2, 0).numpy().astype(np.uint8))


# ----------------------------------------------------------------------------- pydensecrf2


@dataclass
class PeerInput:
    """One image prepared for pydensecrf2 (all conversions done outside the timed sections)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    unary: np.ndarray  # (K, N) float32, -log probs
    sigma_xy: float

    @classmethod
    def of(cls, image: Tensor, probs: Tensor, sigma_xy: float) -> PeerInput:
        flat = probs[0].reshape(probs.shape[1], -1).numpy().astype(np.float32)
        return cls(hwc_uint8(image), np.ascontiguousarray(-np.log(flat)), sigma_xy)

    def classes(self) -> list[eigen.MatrixXf]:
        """Fresh (1, N) inputs, one per class (an inference step overwrites its input)."""
        probs = np.exp(-self.unary)
        return [eigen.matrixXf(np.ascontiguousarray(probs[k : k + 1])) for k in range(len(probs))]

    def crf(self, labels: int, unary: np.ndarray | None = None) -> dcrf.DenseCRF2D:
        h, w = self.rgb.shape[:2]
        crf = dcrf.DenseCRF2D(w, h, labels)
        crf.setUnaryEnergy(self.unary if unary is None else unary)
        return crf

    def add_bilateral(self, crf: dcrf.DenseCRF2D, compat: float = 1.0) -> None:
        """pydensecrf2's lattice build: features, lattice, and its 1-channel filter of ones (the
        normalization it always computes); unnormalized kernel, like ours."""
        crf.addPairwiseBilateral(
            sxy=self.sigma_xy, srgb=SIGMA_RGB, rgbim=self.rgb, compat=compat,
            kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NO_NORMALIZATION,
        )  # fmt: skip


def peer_all_classes(inputs: Sequence[PeerInput]) -> Task:
    """pydensecrf2 on all K channels of one image: build, one inference step (the K-channel filter plus
    a softmax and two K x N passes), and the same step without the pairwise term (to subtract)."""

    def task(watch: Stopwatch, rep: int) -> None:
        item = inputs[rep % len(inputs)]
        crf, bare = item.crf(K), item.crf(K)
        with watch.section("peer build"):
            item.add_bilateral(crf)
        q, tmp1, tmp2 = crf.startInference()
        with watch.section("peer step"):
            crf.stepInference(q, tmp1, tmp2)
        q, tmp1, tmp2 = bare.startInference()
        with watch.section("peer unary-only step"):
            bare.stepInference(q, tmp1, tmp2)

    return task


def peer_one_class_at_a_time(inputs: Sequence[PeerInput]) -> Task:
    """pydensecrf2 as the original rloss C++: one build, then K one-channel filters (inference steps
    of a 1-label CRF on each class's probabilities), and the K steps without pairwise (to subtract)."""

    def task(watch: Stopwatch, rep: int) -> None:
        item = inputs[rep % len(inputs)]
        zero = np.zeros((1, item.unary.shape[1]), np.float32)
        crf, bare = item.crf(1, zero), item.crf(1, zero)
        with watch.section("peer1 build"):
            item.add_bilateral(crf)
        for name, model in (("peer1 steps", crf), ("peer1 unary-only steps", bare)):
            _, tmp1, tmp2 = model.startInference()
            classes = item.classes()
            with watch.section(name):
                for q in classes:
                    model.stepInference(q, tmp1, tmp2)

    return task


def peer_raw_filter(image: Tensor, values: np.ndarray, sigma_xy: float, scale: float) -> np.ndarray:
    """pydensecrf2's unnormalized lattice filter of values (C, N) >= 0, read out of one inference step.

    With zero unaries and Potts weight c, a step from Q = [values; 0] gives softmax(c * [F; 0]) with
    F the filtered values; log(Q_k / Q_zero) / c recovers F. ``scale`` ~ 1 / max F keeps c * F in
    a range where float32 exp/log lose nothing that matters here.
    """
    channels = values.shape[0] + 1
    item = PeerInput(hwc_uint8(image), np.zeros((channels, values.shape[1]), np.float32), sigma_xy)
    crf = item.crf(channels)
    item.add_bilateral(crf, compat=scale)
    _, tmp1, tmp2 = crf.startInference()
    q = eigen.matrixXf(np.ascontiguousarray(np.concatenate([values, np.zeros_like(values[:1])]), np.float32))
    crf.stepInference(q, tmp1, tmp2)
    out = np.asarray(q, np.float64)
    return np.log(out[:-1] / out[-1:]) / scale


# ----------------------------------------------------------------------------- ours


def ours_per_image(images: Tensor, probs: Tensor, sigma_xy: float) -> Task:
    """Ours on one image: build, 21-channel filter, DenseCRF energy forward + backward; and the build's
    Numba kernel alone on precomputed features (what the Python/torch layer around it adds)."""
    loss = DenseCRFLoss(sigma_rgb=SIGMA_RGB, sigma_xy=sigma_xy)
    features = bilateral_features(images, SIGMA_RGB, sigma_xy, torch.float32).numpy()
    lows, highs = (x.double().numpy() for x in torch.aminmax(torch.from_numpy(features), dim=1))
    kernels, scale = numba_kernels(), elevation_scales(features.shape[2])

    def task(watch: Stopwatch, rep: int) -> None:
        i = rep % len(images)
        image, p = images[i : i + 1], probs[i : i + 1]
        with watch.section("ours build kernel"):
            kernels.build_lattice(features[i], scale, *key_fields(lows[i], highs[i]))
        with watch.section("ours build"):
            lat = bilateral_affinity(image, SIGMA_RGB, sigma_xy, "numba")
        with watch.section("ours filter"):
            lat.filter(p)
        leaf = p.clone().requires_grad_()
        with watch.section("ours energy"):
            loss.energy(image, leaf).backward()

    return task


def ours_batch(images: Tensor, probs: Tensor, sigma_xy: float, threads: Threads, energy: bool) -> Task:
    """Ours on a whole batch with the given threads: build + filter, or DenseCRF forward + backward."""
    loss = DenseCRFLoss(sigma_rgb=SIGMA_RGB, sigma_xy=sigma_xy)

    def task(watch: Stopwatch, rep: int) -> None:
        set_threads(*threads)
        leaf = probs.clone().requires_grad_() if energy else probs
        with watch.section(str(threads)):
            if energy:
                loss.energy(images, leaf).backward()
            else:
                bilateral_affinity(images, SIGMA_RGB, sigma_xy, "numba").filter(leaf)

    return task


# ----------------------------------------------------------------------------- back-ends


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings of asynchronous CUDA kernels)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backend_per_image(name: str, backend: str, images: Tensor, probs: Tensor, sigma_xy: float) -> Task:
    """One image per repetition on ``backend`` with inputs where ``images``/``probs`` live: build,
    21-channel filter (the Numba back-end's host copies included for device inputs)."""

    def task(watch: Stopwatch, rep: int) -> None:
        i = rep % len(images)
        synchronize(images.device)
        with watch.section(f"{name} build"):
            affinity = bilateral_affinity(images[i : i + 1], SIGMA_RGB, sigma_xy, backend)
            synchronize(images.device)
        with watch.section(f"{name} filter"):
            affinity.filter(probs[i : i + 1])
            synchronize(images.device)

    return task


def loss_task(name: str, loss: Regularizer, images: Tensor, probs: Tensor) -> Task:
    """A regularizer's energy forward + backward on a whole batch (affinity build included)."""

    def task(watch: Stopwatch, rep: int) -> None:
        leaf = probs.clone().requires_grad_()
        synchronize(images.device)
        with watch.section(f"{name} energy"):
            loss.energy(images, leaf).backward()
            synchronize(images.device)

    return task


def resident_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process, bytes (Linux)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory fn() takes above what was in use before, MiB: CUDA's allocator statistics on a
    GPU; on the host the resident-set high-water mark (reset first), so run it before other work
    leaves freed memory for fn to reuse."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    before = resident_bytes("VmRSS")
    fn()
    return (resident_bytes("VmHWM") - before) / 2**20


def backend_batch(paths: Sequence[Path], device: torch.device) -> tuple[Tensor, Tensor]:
    """The 12 x 21 x 257^2 batch (images, probs) on ``device``."""
    images = batch_of(torch.cat([load_image(p, (257, 257)) for p in paths]), BATCH)
    return images.to(device), smooth_probs(BATCH, 257, 257, seed=258).to(device)


def memory_rows(paths: Sequence[Path], device: torch.device) -> list[Row]:
    """Peak memory of the torch back-end on the 12 x 21 x 257^2 batch: build, filter_and_transpose of
    21 channels, DenseCRF forward + backward (build included)."""
    images, probs = backend_batch(paths, device)
    shape = f"{BATCH}x{K}x257x257"
    kept = bilateral_affinity(images, SIGMA_RGB, SIGMA_XY[257], "torch")
    tables = [kept.offsets, kept.weights, kept.neighbors]
    kept_mib = sum(t.numel() * t.element_size() for t in tables) / 2**20
    loss = DenseCRFLoss(sigma_rgb=SIGMA_RGB, sigma_xy=SIGMA_XY[257], backend="torch")
    peaks = {
        "build": peak_memory_mib(lambda: bilateral_affinity(images, SIGMA_RGB, SIGMA_XY[257], "torch"), device),
        "filter_and_transpose (21 channels)": peak_memory_mib(lambda: kept.filter_and_transpose(probs), device),
        "DenseCRF fwd + bwd": peak_memory_mib(
            lambda: loss.energy(images, probs.clone().requires_grad_()).backward(), device
        ),
    }
    rows = [Row(f"torch back-end memory on {device.type}, batch of {shape}: lattice kept", f"{kept_mib:.0f} MiB")]
    label = f"torch back-end memory on {device.type}, batch of {shape}"
    rows += [Row(f"{label}: {k} peak", f"{v:.0f} MiB") for k, v in peaks.items()]
    return rows


def backend_rows(paths: Sequence[Path], device: torch.device, reps: int) -> list[Row]:
    """The torch back-end on ``device`` (ours column) against the Numba back-end on the host (peer
    column), inputs on ``device`` (so the Numba side pays its host copies on a GPU)."""
    where = f"torch on {device.type} vs numba on the host"
    images = torch.cat([load_image(p, (513, 513)) for p in paths]).to(device)
    probs = smooth_probs(len(paths), 513, 513, seed=513).to(device)
    tasks = [backend_per_image(b, b, images, probs, SIGMA_XY[513]) for b in ("torch", "numba")]
    single = measure(tasks, reps)["wall"]
    batch_images, batch_probs = backend_batch(paths, device)
    tasks = [
        loss_task(b, DenseCRFLoss(sigma_rgb=SIGMA_RGB, sigma_xy=SIGMA_XY[257], backend=b), batch_images, batch_probs)
        for b in ("torch", "numba")
    ]
    # the gated CRF at its recipe's resolution (1/4 of a 513 crop) and its settings there
    small_images, small_probs = (F.interpolate(x, size=(129, 129), mode="area") for x in (batch_images, batch_probs))
    gated = GatedCRFLoss(sigma_xy=6.0, radius=5, scale_factor=1.0)
    tasks.append(loss_task("gatedcrf", gated, small_images, small_probs))
    batch = measure(tasks, reps)["wall"]
    gpu_target = 10.0 if device.type == "cuda" else None
    return [
        speed_row(f"513x513 build, {where}", single, lambda t: t["torch build"], lambda t: t["numba build"]),
        speed_row(f"513x513 filter, 21 channels, {where}", single, lambda t: t["torch filter"],
                  lambda t: t["numba filter"]),
        speed_row(f"513x513 build + filter, {where}", single, lambda t: t["torch build"] + t["torch filter"],
                  lambda t: t["numba build"] + t["numba filter"]),
        speed_row(f"DenseCRF fwd + bwd, batch of {BATCH}x{K}x257x257, {where}", batch,
                  lambda t: t["torch energy"], lambda t: t["numba energy"], max_ms=gpu_target),
        speed_row(f"gated CRF fwd + bwd (radius 5), batch of {BATCH}x{K}x129x129 on {device.type}, vs DenseCRF "
                  f"on {BATCH}x{K}x257x257 (auto back-end)", batch, lambda t: t["gatedcrf energy"],
                  lambda t: t[("numba" if device.type == "cpu" else "torch") + " energy"]),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- table


@dataclass
class Row:
    metric: str
    ours: str
    peer: str = "—"
    ratio: str = "—"
    target: str = "—"
    passed: bool | None = None

    def cells(self) -> list[str]:
        result = "—" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return [self.metric, self.ours, self.peer, self.ratio, self.target, result]


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def peer_filter(s: Sections) -> float:
    return s["peer step"] - s["peer unary-only step"]


def peer_one_class(s: Sections) -> float:
    return s["peer1 build"] + s["peer1 steps"] - s["peer1 unary-only steps"]


def ours_total(s: Sections) -> float:
    return s["ours build"] + s["ours filter"]


def speed_row(
    label: str, samples: Sequence[Sections], ours: Callable[[Sections], float],
    peer: Callable[[Sections], float] | None = None, max_ms: float | None = None, min_ratio: float | None = None,
) -> Row:  # fmt: skip
    """Medians of ours, the peer and the per-repetition ratio peer / ours, with an optional target."""
    ours_s = median(samples, ours)
    row = Row(label, ms(ours_s))
    if peer is not None:
        ratio = median(samples, lambda s: peer(s) / ours(s))
        row.peer, row.ratio = ms(median(samples, peer)), f"{ratio:.2f}x"
        if min_ratio is not None:
            row.target, row.passed = f"≥ {min_ratio:g}x", ratio >= min_ratio
    if max_ms is not None:
        row.target, row.passed = f"≤ {max_ms:g} ms", 1e3 * ours_s <= max_ms
    return row


def per_image_speed_rows(size: int, samples: Sequence[Sections], targets: bool) -> list[Row]:
    """Per-image rows of one image size; targets only where ``targets`` (513x513)."""

    def target(value: float) -> float | None:
        return value if targets else None

    s = f"{size}x{size}"
    return [
        speed_row(f"{s} lattice build", samples, lambda t: t["ours build"], lambda t: t["peer build"], target(15)),
        speed_row(f"{s} of which the Numba kernel `kernels.build_lattice` (ours only)", samples,
                  lambda t: t["ours build kernel"]),
        speed_row(f"{s} filter, 21 channels", samples, lambda t: t["ours filter"], peer_filter, target(10)),
        Row(f"{s} pydensecrf2 inference step before the subtraction (peer only)", "—",
            ms(median(samples, lambda t: t["peer step"]))),
        speed_row(f"{s} build + filter vs pydensecrf2 build + filter", samples, ours_total,
                  lambda t: t["peer build"] + peer_filter(t), min_ratio=target(2)),
        speed_row(f"{s} build + filter vs pydensecrf2 one class at a time (build + 21 x 1 channel)",
                  samples, ours_total, peer_one_class, min_ratio=target(20)),
        speed_row(f"{s} DenseCRF energy fwd + bwd vs pydensecrf2 one class at a time", samples,
                  lambda t: t["ours energy"], peer_one_class),
    ]  # fmt: skip


ONE_THREAD: Threads = (1, 1)


def thread_row(
    label: str, samples: Sequence[Sections], threads: Threads, min_speedup: float | None, max_seconds: float | None
) -> Row:
    """A batch with ``threads`` (ours column) vs the same batch on 1 thread (peer column); optional
    targets on the speed-up or on the time."""
    one, many = median(samples, lambda t: t[str(ONE_THREAD)]), median(samples, lambda t: t[str(threads)])
    speedup = median(samples, lambda t: t[str(ONE_THREAD)] / t[str(threads)])
    row = Row(label, f"{many:.3f} s", f"{one:.3f} s", f"{speedup:.2f}x")
    if min_speedup is not None:
        row.target, row.passed = f"≥ {min_speedup:g}x", speedup >= min_speedup
    if max_seconds is not None:
        row.target, row.passed = f"≤ {max_seconds:g} s", many <= max_seconds
    return row


def accuracy_stats(approx: np.ndarray, exact: np.ndarray) -> tuple[float, float, float]:
    """(overall ratio sum(approx)/sum(exact), median per-pixel relative error, the same median after
    dividing approx by the overall ratio)."""
    ratio = float(approx.sum() / exact.sum())
    rel = np.abs(approx - exact) / np.abs(exact)
    shape = np.abs(approx / ratio - exact) / np.abs(exact)
    return ratio, float(np.median(rel)), float(np.median(shape))


def filtered_on_real_images(paths: Sequence[Path], sigma_xy: float) -> dict[str, np.ndarray]:
    """Exact, ours and pydensecrf2's raw filter of ones (key "<who> ones") and of random values
    ("<who> random"), pooled over the images downsampled ACCURACY_FACTOR x."""
    pooled: dict[str, list[np.ndarray]] = defaultdict(list)
    sigma = sigma_xy / ACCURACY_FACTOR
    for index, path in enumerate(paths):
        image = load_image(path, factor=ACCURACY_FACTOR)
        shape = image.shape[2:]
        g = torch.Generator().manual_seed(index)
        values = torch.cat([torch.ones(1, 1, *shape), 0.1 + torch.rand(1, 3, *shape, generator=g)], 1)
        exact = bilateral_filter(image, values.double(), SIGMA_RGB, sigma, backend="exact")[0].flatten(1).numpy()
        ours = bilateral_filter(image, values, SIGMA_RGB, sigma)[0].flatten(1).double().numpy()
        peer = peer_raw_filter(image, values[0].flatten(1).numpy(), sigma, 1.0 / float(exact.max()))
        for who, out in (("exact", exact), ("ours", ours), ("peer", peer)):
            pooled[f"{who} ones"].append(out[:1].ravel())
            pooled[f"{who} random"].append(out[1:].ravel())
    return {key: np.concatenate(parts) for key, parts in pooled.items()}


def accuracy_rows(paths: Sequence[Path]) -> list[Row]:
    """Ours and pydensecrf2's raw filter vs the exact filter, real images downsampled 4x."""
    rows = []
    for sigma_xy in ACCURACY_SIGMA_XY:
        out = filtered_on_real_images(paths, sigma_xy)
        for kind in ("ones", "random"):
            o_ratio, o_med, o_shape = accuracy_stats(out[f"ours {kind}"], out[f"exact {kind}"])
            p_ratio, p_med, p_shape = accuracy_stats(out[f"peer {kind}"], out[f"exact {kind}"])
            label = f"accuracy, sigma_xy {sigma_xy:g} (/{ACCURACY_FACTOR}), values {kind}:"
            rows += [
                Row(f"{label} overall ratio sum(approx)/sum(exact)", f"{o_ratio:.4f}", f"{p_ratio:.4f}",
                    target="0.9–1.1", passed=0.9 <= o_ratio <= 1.1),
                Row(f"{label} median per-pixel relative error", f"{100 * o_med:.2f}%", f"{100 * p_med:.2f}%",
                    target="≤ 10%", passed=o_med <= 0.10),
                Row(f"{label} the same after dividing by the overall ratio", f"{100 * o_shape:.2f}%",
                    f"{100 * p_shape:.2f}%"),
            ]  # fmt: skip
    return rows


def markdown(rows: Sequence[Row]) -> str:
    header = ["metric", "ours", "peer", "ratio (peer / ours)", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine_info() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.release()}"


def code_version() -> str:
    """The checkout's git commit, and whether the rloss sources imported (this checkout's src/ or a
    copy on PYTHONPATH) differ from it."""
    source = Path(rloss.__file__).resolve().parents[1]  # the folder holding the rloss package
    work_tree = source.parent if source.name == "src" else source

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["git", "-C", str(ROOT), f"--work-tree={work_tree}", *args]
        return subprocess.run(command, capture_output=True, text=True)

    commit = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    where = "" if work_tree == ROOT else f", imported from {source}"
    same = git("diff", "--quiet", "HEAD", "--", "src").returncode == 0
    return f"{commit} ({'as committed' if same else 'with changes not committed'}{where})"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


NOTES = """\
What each number covers. Times are per image unless the row says batch, single-threaded except
the batch rows; each is the median over repetitions, ours and the peer run side by side in every
repetition (alternating order), one image per repetition in turn; the ratio column is the median
of the per-repetition ratios. Targets are judged on wall time; the CPU-time table (this process's
`time.process_time`) shows the same per-image work without the time other processes took from us
on this shared machine.

- **ours build**: `bilateral_affinity(image, 15, sigma_xy, "numba")` (RGBXY features from the float image, input
  checks, lattice); "of which the Numba kernel" times `kernels.build_lattice` alone on features
  computed beforehand; the difference is the torch/Python layer.
  **ours filter**: `lattice.filter` of the (1, 21, H, W) probabilities (host copies included).
  **ours DenseCRF**: `DenseCRFLoss(sigma_rgb=15, sigma_xy).energy(images, probs)` + `.backward()`
  (input checks, build, a 22-channel filter, a 21-channel transposed filter, the tensor math).
  sigma_xy is 100 at 513x513 and 50 at 257x257 (rloss's 100 with scale_factor 0.5).
- **peer build**: pydensecrf2 `DenseCRF2D.addPairwiseBilateral(sxy, srgb, uint8 image, DIAG_KERNEL,
  NO_NORMALIZATION)`: features, lattice, plus the 1-channel filter of ones that pydensecrf2 always
  runs to compute its normalization. Object creation and `setUnaryEnergy` are not timed.
- **peer filter, 21 channels**: one `stepInference` of a 21-label CRF (one 21-channel lattice
  filter, the Potts scaling, the unary subtraction, a softmax over 21 x N) minus one `stepInference`
  of an identical CRF without the pairwise term (unary copy + softmax), subtracted per repetition.
  The row "inference step before the subtraction" is the step alone.
- **peer one class at a time**: what the original rloss C++ (`bilateralfilter`) does per image: one
  lattice build, then 21 single-channel filters. Timed as `addPairwiseBilateral` on a 1-label CRF
  plus 21 `stepInference` calls on each class's probabilities, minus 21 unary-only steps.
- **DenseCRF vs one class at a time**: ours is the whole loss forward + backward; the peer is only
  the lattice work of the original rloss forward (its backward reuses it): an indication.
- **batch rows**: ours is the batch with 2 threads, the peer column the same batch with
  `rloss.lattice.set_num_threads(1)` and `torch.set_num_threads(1)`; the ratio is the speed-up (wall
  time), which other processes running on the two cores reduce. "2 lattice threads (torch 1)" sets
  only the lattice to 2 threads (the target's API); "torch 2" also gives torch 2 threads, as a
  2-core training process would; the DenseCRF batch runs with both on 2.
- **accuracy**: real images downsampled 4x (antialiased, about 125x94), sigma_rgb 15, sigma_xy / 4;
  values all ones (1 channel) or uniform 0.1–1.1 (3 channels); pooled over the images. Ours is
  `bilateral_filter` (float32); the peer is pydensecrf2's raw unnormalized lattice filter (read out
  of an inference step); the reference is `bilateral_filter(..., backend="exact")` in float64.
- **back-ends**: the ours column is the torch lattice (`backend="torch"`) on the device named, the
  peer column the Numba lattice (`backend="numba"`) with the same inputs (on a GPU it copies them to
  the host and its results back, as training would); all threads for both (lattice and torch).
  Memory: CUDA allocator peaks on a GPU; on the host the growth of the resident set's high-water
  mark, measured first in the process ("lattice kept": its per-point and vertex tables).
  The gated CRF row: `GatedCRFLoss(sigma_xy=6, radius=5, scale_factor=1)` forward + backward on the batch
  area-downsampled to 129x129 (the paper computes it at 1/4 of the crop), against DenseCRF on the 257x257
  batch with the back-end `auto` picks on that device.
"""


def report(tables: dict[str, Sequence[Row]], header: Sequence[str]) -> str:
    """The markdown document: a header list, then each titled table, then the notes."""
    lines = ["# Permutohedral lattice benchmark", "", *(f"- {item}" for item in header), ""]
    for title, rows in tables.items():
        lines += [f"## {title}", "", markdown(rows), ""]
    return "\n".join(lines) + "\n" + NOTES


# ----------------------------------------------------------------------------- main


def per_image_samples(paths: Sequence[Path], size: int, reps: int) -> dict[str, list[Sections]]:
    images = torch.cat([load_image(p, (size, size)) for p in paths])
    probs = smooth_probs(len(paths), size, size, seed=size)
    sigma_xy = SIGMA_XY[size]
    inputs = [PeerInput.of(images[i : i + 1], probs[i : i + 1], sigma_xy) for i in range(len(paths))]
    set_threads(1)
    tasks = [ours_per_image(images, probs, sigma_xy), peer_all_classes(inputs), peer_one_class_at_a_time(inputs)]
    return measure(tasks, reps)


def batch_rows(paths: Sequence[Path], reps: int) -> list[Row]:
    """A batch of 12 at 257x257: build + filter with 2 lattice threads (torch on 1, then on 2), and
    DenseCRF forward + backward with both on 2, each against the same work on 1 thread."""
    size = 257
    images = batch_of(torch.cat([load_image(p, (size, size)) for p in paths]), BATCH)
    probs = smooth_probs(BATCH, size, size, seed=size + 1)
    shape = f"batch of {BATCH}x{K}x{size}x{size}"

    def samples(energy: bool, configs: Sequence[Threads]) -> list[Sections]:
        return measure([ours_batch(images, probs, SIGMA_XY[size], c, energy) for c in configs], reps)["wall"]

    build = samples(False, (ONE_THREAD, (2, 1), (2, 2)))
    energy = samples(True, (ONE_THREAD, (2, 2)))
    set_threads(1)
    return [
        thread_row(f"build + filter, {shape}: 2 lattice threads (torch 1) vs 1", build, (2, 1), 1.6, None),
        thread_row(f"build + filter, {shape}: 2 lattice threads, torch 2 vs 1", build, (2, 2), None, None),
        thread_row(f"DenseCRF fwd + bwd, {shape}: 2 threads (lattice and torch) vs 1", energy, (2, 2), None, 0.15),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 images, 2 repetitions, no file")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 10 per image, 7 per batch)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results file (default benchmarks/results/lattice.md; with --quick: none)")  # fmt: skip
    return parser.parse_args(argv)


def run(paths: Sequence[Path], image_reps: int, batch_reps: int, memory: list[Row]) -> dict[str, list[Row]]:
    """All measurements, as titled tables (``memory``: rows measured before anything else)."""
    torch.set_flush_denormal(True)
    wall: list[Row] = []
    cpu: list[Row] = []
    for size in (257, 513):
        samples = per_image_samples(paths, size, image_reps)
        wall += per_image_speed_rows(size, samples["wall"], targets=size == 513)
        cpu += per_image_speed_rows(size, samples["cpu"], targets=size == 513)
        progress(f"{size}x{size} per image")
    wall += batch_rows(paths, batch_reps)
    progress("batches")
    wall += accuracy_rows(paths)
    progress("accuracy")
    set_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    backends = backend_rows(paths, torch.device("cpu"), batch_reps)
    if torch.cuda.is_available():
        backends += backend_rows(paths, torch.device("cuda"), batch_reps)
    progress("back-ends")
    return {
        "Speed (wall time) and accuracy": wall,
        "Per-image speed in CPU time (time.process_time)": cpu,
        "Back-ends: the torch lattice against the Numba lattice (all threads)": memory + backends,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    paths = sorted(DATA.glob("*.jpg"))[: 2 if args.quick else None]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    memory = [row for device in devices for row in memory_rows(paths, device)]  # before other work
    progress("memory")
    allocator = keep_freed_memory()
    header = [
        f"command: `python benchmarks/lattice.py{' --quick' if args.quick else ''}`",
        f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {machine_info()}",
        f"rloss commit: {code_version()}",
        f"torch {torch.__version__}, numba {numba.__version__}, pydensecrf2 {version('pydensecrf2')}",
        f"load average (1 / 5 / 15 min) at start: {load_average()}",
        f"glibc keeps freed memory (rloss.utils.allocator.keep_freed_memory, as the rloss command does): {allocator}",
    ]
    image_reps = args.reps or (2 if args.quick else 2 * len(paths))
    batch_reps = args.reps or (2 if args.quick else 7)
    tables = run(paths, image_reps, batch_reps, memory)
    header += [
        f"load average at end: {load_average()}",
        f"repetitions: {image_reps} per image (one image each, {len(paths)} images), {batch_reps} per batch row",
    ]
    text = report(tables, header)
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"saved {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


if __name__ == "__main__":
    main()
