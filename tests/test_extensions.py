"""Each extension point takes one new module plus its registration: a toy regularizer, a toy
network and a toy dataset, defined in a user's own package, train a step through the CLI by name."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from rloss.commands import main
from rloss.models import backbone_names
from rloss.regularizers import REGISTRY, build_regularizer

MODULES = {
    "toy_loss.py": '''
        from rloss.regularizers import Regularizer

        class ToyLoss(Regularizer):
            """Mean squared probability: pulls every pixel away from confident predictions."""

            name = "toy"

            def energy(self, images, probs, roi=None, labels=None):
                probs, roi = self.prepare_inputs(images, probs, roi)
                return (probs ** 2).sum(1).mean()
    ''',
    "toy_net.py": '''
        from torch import nn
        from rloss.models.registry import RAW, SegmentationNet, register_backbone

        @register_backbone("toy_net")
        def build(name, num_classes, in_channels, weights_backbone):
            model = nn.Conv2d(in_channels, num_classes, 3, padding=1)
            return SegmentationNet(model, ("weight",), normalization=RAW, in_channels=in_channels)
    ''',
    "toy_data.py": '''
        import torch
        from torch.utils.data import Dataset
        from rloss.data.base import SegmentationDataModule

        class ToyDataset(Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, index):
                mask = torch.zeros(16, 16, dtype=torch.long)
                mask[:, 8:] = 1
                scribble = torch.full_like(mask, 255)
                scribble[8, 2], scribble[8, 13] = 0, 1
                return {"image": mask[None].float() * 0.5, "scribble": scribble, "mask": mask, "name": str(index)}

        class ToyDataModule(SegmentationDataModule):
            def __init__(self, batch_size: int = 2):
                super().__init__(num_classes=2, class_names=("off", "on"), batch_size=batch_size,
                                 val_batch_size=2, num_workers=0, in_channels=1)

            def make_dataset(self, split):
                return ToyDataset()
    ''',
}


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, source in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in ("toy_loss", "toy_net", "toy_data"):
        sys.modules.pop(module, None)
    REGISTRY.pop("toy", None)
    from rloss.models.registry import BACKBONES

    BACKBONES.pop("toy_net", None)


def test_toy_extensions_train_through_the_cli_by_name(
    user_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the run writes its config.yaml here
    for module in ("toy_loss", "toy_net", "toy_data"):
        importlib.import_module(module)  # importing registers
    assert "toy" in REGISTRY and "toy_net" in backbone_names()
    assert build_regularizer("toy", weight=0.5).weight == 0.5
    assert main([
        "fit", "--data", "ToyDataModule", "--model.backbone", "toy_net", "--model.weights_backbone", "null",
        "--model.regularizers", '[{"class_path": "ToyLoss", "init_args": {"weight": 0.1}}]',
        "--trainer.max_steps", "1", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(tmp_path / "ckpt"),
        "--last_checkpoint.dirpath", str(tmp_path / "ckpt"),
    ]) is None
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_a_taken_regularizer_name_is_refused() -> None:
    from rloss.regularizers import Regularizer

    with pytest.raises(TypeError, match="'densecrf' .* is taken by DenseCRFLoss"):
        type("Impostor", (Regularizer,), {"name": "densecrf"})
