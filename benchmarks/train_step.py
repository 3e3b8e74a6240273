"""What the DenseCRF loss adds to a training step, per affinity back-end.

Times Lightning training steps (forward, pCE + regularizer, backward, SGD step; data loading not
included) of DeepLabv3+ at ``--precision`` (default bf16-mixed) on real VOC images (tests/data,
resized to the crop, cycled to the batch) with ~3% of pixels scribbled, without a regularizer and
with DenseCRF (sigma_rgb 15, sigma_xy 100, scale_factor 0.5, as the original recipe) on each
back-end, and prints the overhead in percent of the step without it. The original rloss PyTorch
code: 1.05 -> 1.66 s/iteration (+58%), batch 12, crop 513, GTX 1080 Ti.

    python benchmarks/train_step.py            # CUDA: batch 12, crop 513, MobileNetV2 and ResNet-101
                                               # CPU: batch 2, crop 257, MobileNetV2 (no target)
    python benchmarks/train_step.py --batch 4 --crop 257 --networks mobilenet_v2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from rloss.data.constants import IGNORE_INDEX
from rloss.models import ScribbleSegmentation
from rloss.regularizers import DenseCRFLoss
from rloss.utils.allocator import keep_freed_memory

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
WEIGHT = 7.1e-5  # configs/regularizer/densecrf_pytorch.yaml (the original 2e-9 converted)


class RealImageBatches(Dataset):
    """``steps`` identical batches of real images (B, 3, crop, crop) 0..255 with random scribbles."""

    def __init__(self, batch: int, crop: int, steps: int) -> None:
        paths = sorted(DATA.glob("*.jpg"))
        images = [np.asarray(Image.open(paths[i % len(paths)]).convert("RGB"), np.float32) for i in range(batch)]
        tensors = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in images]
        self.images = torch.cat([F.interpolate(t, size=(crop, crop), mode="bilinear").clamp(0, 255) for t in tensors])
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 21, (batch, crop, crop), generator=g)
        self.scribbles = torch.where(torch.rand(batch, crop, crop, generator=g) < 0.03, labels, IGNORE_INDEX)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps * len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = i % len(self.images)
        return {"image": self.images[b], "scribble": self.scribbles[b], "mask": self.scribbles[b]}


class StepTimer(pl.Callback):
    """Wall time of each training step, the device synchronized at both ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)


def time_steps(network: str, backend: str | None, args: argparse.Namespace, accelerator: str) -> float:
    """Median seconds per training step (after ``args.warmup`` untimed steps)."""
    regularizers = [] if backend is None else [
        DenseCRFLoss(weight=WEIGHT, sigma_rgb=15.0, sigma_xy=100.0, scale_factor=0.5, backend=backend)
    ]  # fmt: skip
    model = ScribbleSegmentation(
        backbone=f"deeplabv3plus_{network}", weights_backbone=None, regularizers=regularizers
    )
    steps = args.warmup + args.steps
    loader = DataLoader(RealImageBatches(args.batch, args.crop, steps), batch_size=args.batch, num_workers=0)
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=args.precision, max_steps=steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    return statistics.median(timer.seconds[args.warmup :])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=12 if cuda else 2)
    parser.add_argument("--crop", type=int, default=513 if cuda else 257)
    parser.add_argument("--networks", nargs="+", default=["mobilenet_v2", "resnet101"] if cuda else ["mobilenet_v2"])
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=10 if cuda else 5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3 if cuda else 2, help="untimed first steps")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keep_freed_memory()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-run banner lines
    warnings.filterwarnings("ignore", message=".*(validation_step|LeafSpec|does not have many workers).*")
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.cuda.get_device_name() if accelerator == "gpu" else "CPU"
    backends = ["numba", "torch"]
    print(f"# Training step, DeepLabv3+, batch {args.batch}, crop {args.crop}, {args.precision}, {device}")
    print("command: `" + " ".join(["python benchmarks/train_step.py", *sys.argv[1:]]) + "`")
    print("\n| network | no regularizer | " + " | ".join(f"+ DenseCRF ({b})" for b in backends) + " |")
    print("|---|---|" + "---|" * len(backends))
    for network in args.networks:
        base = time_steps(network, None, args, accelerator)
        cells = [f"{base:.3f} s"]
        for backend in backends:
            seconds = time_steps(network, backend, args, accelerator)
            cells.append(f"{seconds:.3f} s ({100 * (seconds / base - 1):+.0f}%)")
        print(f"| {network} | " + " | ".join(cells) + " |", flush=True)
    print("\nMedian seconds per step; in brackets the DenseCRF term's overhead (original rloss: +58%).")


if __name__ == "__main__":
    main()
