"""Baselines on the synthetic scribble data: is it learnable, and does a DenseCRF loss help?

Trains a tiny CNN from scratch and prints the validation mIoU of:

- nearest-scribble (Voronoi) labelling of the validation scribbles, no learning;
- pCE on the scribbles (phase 1), then continued with pCE alone (the control of phase 2);
- pCE + DenseCRF fine-tuned from the phase-1 weights (phase 2);
- full supervision (cross-entropy on the full masks), as many iterations as phases 1 + 2.

The DenseCRF term here is the exact (brute-force) relaxed Potts energy sum_k S_k^T W (1 - S_k)
per pixel, on image and S downscaled by ``--scale`` (small images only), so the benchmark
measures the data, independently of the lattice. Usage:

    python benchmarks/synthetic_baselines.py --iters 300 --finetune-iters 150 --device cpu

Measured (64x64, 400 train / 100 val images, 300 + 150 iterations, weight 1): Voronoi 30-31,
pCE 82-84, pCE + DenseCRF 89-90, full supervision 96-97 mIoU (seeds 0 and 1, one H200; the same
trend on 2 CPU cores with 200 + 100 iterations: 82.6 / 88.9 / 95.5).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from rloss.data.constants import IGNORE_INDEX
from rloss.data.synthetic import SyntheticScribbleDataset
from rloss.data.synthetic_scenes import SYNTHETIC_CLASSES
from rloss.metrics import class_iou, mean_iou
from rloss.models.backbones import build_backbone

NUM_CLASSES = len(SYNTHETIC_CLASSES)


def load_split(num_images: int, size: int, seed: int, split: str) -> tuple[Tensor, Tensor, Tensor]:
    """images float (N, 3, H, W) 0..255, scribbles and masks int64 (N, H, W)."""
    dataset = SyntheticScribbleDataset(num_images, size, seed, split)
    items = [dataset[i] for i in range(num_images)]
    return tuple(torch.stack([item[key] for item in items]) for key in ("image", "scribble", "mask"))


def nearest_scribble(scribbles: Tensor) -> Tensor:
    """Label every pixel with its nearest scribble pixel's class; (N, H, W) -> (N, H, W)."""
    out = []
    for scribble in scribbles.numpy():
        _, (iy, ix) = ndimage.distance_transform_edt(scribble == IGNORE_INDEX, return_indices=True)
        out.append(scribble[iy, ix])
    return torch.from_numpy(np.stack(out))


class TinyNet(nn.Module):
    """The package's ``tiny`` backbone (:class:`rloss.models.backbones.TinyNet`) on raw 0..255 images:
    (B,3,H,W) -> (B,K,H,W), input scaled as (x - 128) / 64."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_backbone("tiny", NUM_CLASSES)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - 128.0) / 64.0)


def dense_crf_energy(images: Tensor, probs: Tensor, sigma_rgb: float, sigma_xy: float, scale: float) -> Tensor:
    """Mean over images of sum_k S_k^T W (1 - S_k) / N, W the exact RGBXY Gaussian affinity.

    images: (B, 3, H, W) 0..255; probs: (B, K, H, W). Computed at ``scale`` x the resolution
    (sigma_xy in full-resolution pixels, scaled with it).
    """
    images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
    probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False)
    b, k, h, w = probs.shape
    yy, xx = torch.meshgrid(torch.arange(h, device=images.device), torch.arange(w, device=images.device),
                            indexing="ij")
    xy = torch.stack([yy, xx], -1).reshape(1, h * w, 2).float().expand(b, -1, -1) / (sigma_xy * scale)
    features = torch.cat([xy, images.flatten(2).transpose(1, 2) / sigma_rgb], 2)
    affinity = torch.exp(-0.5 * torch.cdist(features, features).square())
    soft = probs.flatten(2)
    return (soft * torch.bmm(1.0 - soft, affinity)).sum(dim=(1, 2)).mean() / (h * w)


def train(net: nn.Module, images: Tensor, labels: Tensor, iters: int, lr: float, batch_size: int,
          regularizer: Callable[[Tensor, Tensor], Tensor] | None = None) -> nn.Module:
    """Adam on cross-entropy over labeled pixels (+ regularizer(images, softmax)), random flips."""
    device = next(net.parameters()).device
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(iters):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        if torch.rand(1, generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        logits = net(x)
        labeled = (y != IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum") / labeled
        if regularizer is not None:
            loss = loss + regularizer(x, logits.softmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


@torch.no_grad()
def predict(net: nn.Module, images: Tensor, batch_size: int = 50) -> Tensor:
    device = next(net.parameters()).device
    net.eval()
    return torch.cat([net(images[i : i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=300, help="phase-1 iterations")
    parser.add_argument("--finetune-iters", type=int, default=150, help="phase-2 iterations")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--crf-weight", type=float, nargs="+", default=[2.0])
    parser.add_argument("--sigma-rgb", type=float, default=15.0)
    parser.add_argument("--sigma-xy", type=float, default=None, help="default: 0.2 x size")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    sigma_xy = args.sigma_xy or 0.2 * args.size
    start = time.perf_counter()
    train_images, train_scribbles, train_masks = load_split(args.num_train, args.size, args.seed, "train")
    val_images, val_scribbles, val_masks = load_split(args.num_val, args.size, args.seed, "val")
    coverage = (train_scribbles != IGNORE_INDEX).float().mean().item()
    print(f"data: {args.num_train}+{args.num_val} images {args.size}x{args.size}, scribbles on "
          f"{100 * coverage:.2f}% of pixels, generated in {time.perf_counter() - start:.1f} s")

    rows: list[tuple[str, Tensor, float]] = [("nearest scribble (Voronoi)", nearest_scribble(val_scribbles), 0.0)]

    def run(name: str, make: Callable[[], nn.Module]) -> nn.Module:
        tic = time.perf_counter()
        net = make()
        rows.append((name, predict(net, val_images), time.perf_counter() - tic))
        print(f"  {name}: {time.perf_counter() - tic:.0f} s", flush=True)
        return net

    fresh = lambda: TinyNet().to(args.device)  # noqa: E731
    phase1 = run(f"pCE ({args.iters} it)", lambda: train(
        fresh(), train_images, train_scribbles, args.iters, args.lr, args.batch_size))
    total = args.iters + args.finetune_iters
    run(f"pCE ({total} it)", lambda: train(
        copy.deepcopy(phase1), train_images, train_scribbles, args.finetune_iters, args.finetune_lr, args.batch_size))
    for weight in args.crf_weight:
        crf = lambda x, s, w=weight: w * dense_crf_energy(x, s, args.sigma_rgb, sigma_xy, args.scale)  # noqa: E731
        run(f"pCE + {weight:g} DenseCRF ({total} it)", lambda c=crf: train(
            copy.deepcopy(phase1), train_images, train_scribbles, args.finetune_iters, args.finetune_lr,
            args.batch_size, c))
    run(f"full supervision ({total} it)", lambda: train(
        fresh(), train_images, train_masks, total, args.lr, args.batch_size))

    names = " ".join(f"{n[:10]:>10}" for n in SYNTHETIC_CLASSES)
    print(f"\n| {'method':<34} | mIoU | {names} | train s |")
    for name, pred, seconds in rows:
        per_class = " ".join(f"{iou:10.1f}" for iou in class_iou(pred, val_masks, NUM_CLASSES).tolist())
        print(f"| {name:<34} | {mean_iou(pred, val_masks, NUM_CLASSES):4.1f} | {per_class} | {seconds:7.0f} |")


if __name__ == "__main__":
    main()
