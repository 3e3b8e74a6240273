"""The figure of ``rloss demo``: validation images with the predictions of some runs."""

from __future__ import annotations

from pathlib import Path

import torch

from rloss.data.constants import IGNORE_INDEX
from rloss.utils.atomic import atomic_path


@torch.no_grad()
def save_predictions(path: Path, models: dict, dataset, count: int) -> None:
    """A figure: one row per validation image, columns image / scribbles / models... / ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    count = min(count, len(dataset))
    items = [dataset[i] for i in range(count)]
    images = torch.stack([item["image"] for item in items])
    predictions = {}
    for name, model in models.items():
        model.eval()
        predictions[name] = model(images).argmax(dim=1)
    colours = ["#202020", "#e6550d", "#31a354", "#3182bd", "#9e9ac8", "#fdd0a2", "#c7e9c0", "#9ecae1"]
    num_classes = max(4, int(max(item["mask"].max() for item in items)) + 1)
    cmap = ListedColormap(colours[:num_classes] if num_classes <= len(colours) else plt.cm.tab20.colors[:num_classes])
    scribble_cmap = ListedColormap(["#ffffff", *cmap.colors[1:]])
    columns = ["image", "scribbles", *models, "ground truth"]
    fig, axes = plt.subplots(count, len(columns), figsize=(2.0 * len(columns), 2.0 * count + 0.3), squeeze=False)
    for row, item in enumerate(items):
        scribble = item["scribble"].numpy().astype(float)
        scribble[scribble == IGNORE_INDEX] = float("nan")
        panels = [
            ("image", item["image"].permute(1, 2, 0).numpy().astype("uint8"), {}),
            ("scribbles", item["image"].permute(1, 2, 0).numpy().astype("uint8") // 3, {}),
            *[(name, predictions[name][row].numpy(), {"cmap": cmap, "vmin": 0, "vmax": num_classes - 1})
              for name in models],
            ("ground truth", item["mask"].numpy(), {"cmap": cmap, "vmin": 0, "vmax": num_classes - 1}),
        ]
        for col, (title, array, kwargs) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(array, interpolation="nearest", **kwargs)
            if title == "scribbles":  # background strokes in white: visible on the darkened image
                ax.imshow(scribble, cmap=scribble_cmap, vmin=0, vmax=num_classes - 1, interpolation="nearest")
            if row == 0:
                ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
