"""ScribbleSegmentation and the backbone factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rloss.data.constants import IGNORE_INDEX, PAD_INDEX
from rloss.models import ScribbleSegmentation, backbone_names, build_backbone
from rloss.models.segmentation import term_names

pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")

FAMILY_EXAMPLES = {"deeplabv3plus_<encoder>": ["deeplabv3plus_mobilenet_v2", "deeplabv3plus_resnet101"]}
BACKBONES = [example for name in backbone_names() for example in FAMILY_EXAMPLES.get(name, [name])]


@pytest.mark.parametrize("name", BACKBONES)
def test_backbones_return_logits_at_input_size(name: str) -> None:
    net = build_backbone(name, num_classes=5, weights_backbone=None).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 33, 45))  # odd sizes, not multiples of the output stride
    assert out.shape == (1, 5, 33, 45)
    backbone, head = net.parameter_groups()
    assert backbone and head and len(backbone) + len(head) == len(list(net.parameters()))


def test_unknown_backbone_lists_names() -> None:
    with pytest.raises(ValueError, match="deeplab_largefov.*deeplabv3plus_<encoder>.*unet"):
        build_backbone("resnet", 21, None)


def test_term_names_number_repeated_classes() -> None:
    assert term_names([nn.Identity(), nn.ReLU(), nn.Identity()]) == ["Identity_1", "ReLU", "Identity_2"]


def tiny_model(**kwargs) -> ScribbleSegmentation:
    return ScribbleSegmentation(num_classes=3, backbone="lraspp_mobilenet_v3_large", weights_backbone=None, **kwargs)


def batch(scribble_value: int = IGNORE_INDEX) -> dict:
    mask = torch.randint(0, 3, (2, 32, 32))
    mask[:, :, 28:] = PAD_INDEX
    scribble = torch.full_like(mask, scribble_value)
    scribble[:, :, 28:] = PAD_INDEX
    return {"image": torch.rand(2, 3, 32, 32) * 255, "scribble": scribble, "mask": mask, "name": ["a", "b"]}


def test_empty_scribbles_give_zero_pce_and_the_step_runs() -> None:
    model = tiny_model()
    loss = model.training_step(batch(IGNORE_INDEX), 0)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()


def test_full_supervision_trains_on_masks() -> None:
    assert tiny_model(supervision="full").training_step(batch(IGNORE_INDEX), 0).item() > 0


@pytest.mark.parametrize("supervision, labels", [("scribble", "scribble"), ("full", "mask")])
def test_regularizers_see_raw_images_probs_roi_and_the_training_labels(supervision: str, labels: str) -> None:
    seen = {}

    class Probe(nn.Module):
        def forward(self, images, probs, roi=None, labels=None):
            seen.update(images=images, probs=probs, roi=roi, labels=labels)
            return probs.sum() * 0 + 1.5

    model = tiny_model(regularizers=[Probe()], supervision=supervision)
    data = batch(1)
    loss = model.training_step(data, 0)
    assert torch.equal(seen["images"], data["image"])
    assert torch.allclose(seen["probs"].sum(1), torch.ones(2, 32, 32))
    assert torch.equal(seen["roi"], data["mask"] != PAD_INDEX)
    assert torch.equal(seen["labels"], data[labels])
    assert loss.item() > 1.5


def test_validation_metrics_ignore_255_and_padding() -> None:
    model = tiny_model(class_names=["bg", "a", "b"])
    data = batch()
    model.eval()
    with torch.no_grad():
        prediction = model(data["image"]).argmax(1)
    data["mask"] = torch.where(data["mask"] == PAD_INDEX, PAD_INDEX, prediction)
    data["mask"][:, 0] = IGNORE_INDEX
    with torch.no_grad():
        model._evaluate(data, "val")
    scores = model.metrics["val"].compute()
    assert scores["mIoU"].item() == pytest.approx(1.0)
    assert scores["pixel_acc"].item() == pytest.approx(1.0)


def test_optimizer_groups_and_poly_schedule() -> None:
    model = tiny_model(lr=0.01, head_lr_mult=10.0, poly_power=0.9)
    model.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.1])
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)


def test_init_weights_loads_network_weights(tmp_path) -> None:
    source = tiny_model()
    path = tmp_path / "phase1.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = tiny_model(init_weights=str(path))
    for (name, a), b in zip(source.net.state_dict().items(), target.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_init_weights_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="init_weights.*missing.ckpt"):
        tiny_model(init_weights=str(tmp_path / "missing.ckpt"))
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt.*no network weights"):
        tiny_model(init_weights=str(tmp_path / "other.ckpt"))
