"""Label PNGs written atomically (VOC palette or grayscale) read back unchanged; label value checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rloss.data.constants import IGNORE_INDEX, PAD_INDEX, voc_palette
from rloss.data.files import read_label, write_label_png
from rloss.utils.atomic import temp_files
from rloss.utils.checks import check_labels


@pytest.mark.parametrize(("palette", "mode"), [(True, "P"), (False, "L")])
def test_label_png_round_trip(tmp_path: Path, palette: bool, mode: str) -> None:
    labels = torch.tensor([[0, 1, 20], [IGNORE_INDEX, PAD_INDEX, 3]], dtype=torch.uint8)
    path = tmp_path / "out" / "mask.png"
    write_label_png(labels, path, palette=palette)
    with Image.open(path) as image:
        assert image.mode == mode
        if palette:
            assert image.getpalette()[: 3 * 21] == voc_palette()[: 3 * 21]
    assert torch.equal(read_label(path, 21, (2, 3)), labels.long())
    assert temp_files(path.parent, ".png") == []


def test_label_png_rejects_bad_input_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    write_label_png(np.zeros((2, 2), np.uint8), path)
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        write_label_png(np.zeros((1, 2, 2), np.uint8), path)
    with pytest.raises(ValueError, match="0..255"):
        write_label_png(np.full((2, 2), 300), path)
    assert np.asarray(Image.open(path)).tolist() == [[0, 0], [0, 0]]


def test_check_labels_names_the_bad_id_inside_the_roi() -> None:
    labels = torch.tensor([[[0, 2, IGNORE_INDEX, PAD_INDEX, 5]]])
    roi = torch.tensor([[[True, True, True, True, False]]])
    assert check_labels(labels, 3, roi=roi).tolist() == [[[True, True, False, False, False]]]
    with pytest.raises(ValueError, match="labels: holds class id 5; expected 0..2"):
        check_labels(labels, 3)
