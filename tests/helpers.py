"""Shared helpers for the lattice and loss tests: real images and an explicit dense affinity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rloss.commands import main

DATA = Path(__file__).parent / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REAL_IMAGES = ("2007_000032", "2007_000063", "2007_000323", "2008_000003", "2011_003223")


def load_image(name: str, factor: int = 1) -> torch.Tensor:
    """A real VOC image as (1, 3, H/factor, W/factor) float RGB 0..255 (antialiased downsampling)."""
    array = np.asarray(Image.open(DATA / f"{name}.jpg").convert("RGB"), dtype=np.float32)
    image = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
    if factor > 1:
        size = (image.shape[2] // factor, image.shape[3] // factor)
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True).clamp(0, 255)
    return image


def dense_affinity(image: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    """Explicit N x N matrix W_ij = exp(-|p_i-p_j|^2/(2 sxy^2) - |I_i-I_j|^2/(2 srgb^2)), float64,
    written directly from the definition (independent of rloss.lattice)."""
    _, _, h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    rgb = image[0].double().numpy().reshape(3, -1).T
    dpos = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    drgb = ((rgb[:, None, :] - rgb[None, :, :]) ** 2).sum(-1)
    return np.exp(-dpos / (2 * sigma_xy**2) - drgb / (2 * sigma_rgb**2))


def random_blocks_image(h: int, w: int, seed: int) -> torch.Tensor:
    """A synthetic piecewise-constant image with noise: (1, 3, h, w) RGB 0..255."""
    g = torch.Generator().manual_seed(seed)
    colors = torch.rand(4, 3, generator=g) * 255
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    region = (ys * 2 // h) * 2 + (xs * 2 // w)
    image = colors[region].permute(2, 0, 1)[None] + 6 * torch.randn(1, 3, h, w, generator=g)
    return image.clamp(0, 255)


def network_checkpoint(path: Path, backbone: str, num_classes: int, in_channels: int = 3) -> Path:
    """Write a randomly initialised ``backbone`` as a checkpoint state_dict (``net.*`` keys) that
    ``--model.init_weights`` accepts; returns ``path``."""
    from rloss.models.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone(backbone, num_classes, None, in_channels)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def write_folder(root: Path, train: int = 4, val: int = 2) -> Path:
    """Grayscale 24x24 images of a bright square (class 1) on a dark ground (class 0), a two-pixel
    scribble per training image, full masks for every id."""
    rng = np.random.default_rng(0)
    for folder in ("images", "scribbles", "masks", "splits"):
        (root / folder).mkdir(parents=True)
    ids = [f"case{i}" for i in range(train + val)]
    for i, sample_id in enumerate(ids):
        mask = np.zeros((24, 24), np.uint8)
        mask[4 + i : 14 + i, 6:18] = 1
        image = (mask * 150 + 50 + rng.integers(0, 30, mask.shape)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{sample_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{sample_id}.png")
        scribble = np.full_like(mask, 255)
        scribble[1, 1], scribble[8 + i, 12] = 0, 1
        Image.fromarray(scribble).save(root / "scribbles" / f"{sample_id}.png")
    (root / "splits" / "train.txt").write_text("\n".join(ids[:train]))
    (root / "splits" / "val.txt").write_text("\n".join(ids[train:]))
    (root / "classes.txt").write_text("ground\nsquare\n")
    return root


def demo_args(command: str, *extra: str, num_train: int = 16, num_val: int = 4) -> list[str]:
    """``rloss`` arguments for a small CPU run of the demo config (synthetic data, tiny network, no
    logger, checkpoints in ./ckpt); ``extra`` arguments come last and override."""
    return [
        command, "--config", str(CONFIGS / "demo" / "base.yaml"), "--config", str(CONFIGS / "demo" / "pce.yaml"),
        "--data.init_args.num_train", str(num_train), "--data.init_args.num_val", str(num_val),
        "--data.init_args.batch_size", "4", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--checkpoint.dirpath", "ckpt", *extra,
    ]


def cli_error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    """Run ``rloss args`` in-process; assert exit 2, no traceback and one ``rloss: error:`` line; return stderr."""
    try:
        status = main(args)
    except SystemExit as exit:  # argument errors exit from the parser
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rloss: error: ")]
    assert len(lines) == 1, err
    return err


def save_tiny_checkpoint(path: Path, num_classes: int, in_channels: int) -> torch.nn.Module:
    """Write a checkpoint of an untrained ``tiny`` ScribbleSegmentation as ``rloss fit`` would (weights,
    hyperparameters, Lightning version) to ``path``; return the model in eval mode."""
    import pytorch_lightning as pl

    from rloss.models import ScribbleSegmentation

    model = ScribbleSegmentation(num_classes=num_classes, backbone="tiny", weights_backbone=None,
                                 in_channels=in_channels)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return model.eval()
