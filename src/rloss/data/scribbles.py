"""ScribbleSup scribble annotations: XML files -> PNG label masks.

The PASCAL-Scribble annotations (Lin et al., CVPR 2016) give one XML file per image::

    <annotation>
      <size><width>500</width><height>375</height></size>
      <polygon>
        <tag>plane</tag>
        <point><X>12</X><Y>40</Y></point> ...
      </polygon> ...
    </annotation>

Each ``polygon`` is one scribble: its points (0-based pixels) are joined by 3-pixel-wide
lines with a 3x3 square on every point (this reproduces the sample scribble masks in
``shared/data/voc_sample`` pixel for pixel). The mask holds the VOC class id on scribble pixels and
``IGNORE_INDEX`` (255)
elsewhere; later scribbles are drawn over earlier ones. Points outside the image are
clamped to its border, as in the authors' MATLAB converter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rloss.data.constants import IGNORE_INDEX, VOC_CLASSES
from rloss.data.files import write_label_png

SCRIBBLE_WIDTH = 3
"""Width in pixels of the lines drawn between consecutive scribble points."""

SCRIBBLE_CLASS_ALIASES: dict[str, str] = {
    "plane": "aeroplane", "bike": "bicycle", "table": "diningtable", "plant": "pottedplant", "monitor": "tvmonitor",
}
"""Short class names used by the ScribbleSup XML files, mapped to ``VOC_CLASSES`` names."""

_CLASS_IDS = {name: index for index, name in enumerate(VOC_CLASSES)} | {
    alias: VOC_CLASSES.index(name) for alias, name in SCRIBBLE_CLASS_ALIASES.items()
}


class ScribbleFormatError(ValueError):
    """A scribble XML file cannot be read."""


class UnknownScribbleClassError(ScribbleFormatError):
    """A scribble XML file names a class that is not a VOC class."""


@dataclass(frozen=True)
class Scribble:
    """One scribble: a VOC class id and its points as (x, y) pixels."""

    class_id: int
    points: tuple[tuple[int, int], ...]


def scribble_class_id(name: str, source: Path) -> int:
    """The VOC class id of a ScribbleSup class name (``source`` names the file in errors)."""
    try:
        return _CLASS_IDS[name.strip().lower()]
    except KeyError:
        raise UnknownScribbleClassError(
            f"unknown scribble class {name!r} in {source}; known names: {', '.join(sorted(_CLASS_IDS))}"
        ) from None


def read_scribbles(xml_path: Path) -> list[Scribble]:
    """Parse a ScribbleSup XML file into scribbles, in file order (polygons without points are skipped)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise ScribbleFormatError(f"{xml_path} is not valid XML: {error}") from error
    scribbles = []
    for polygon in root.iter("polygon"):
        tag = polygon.findtext("tag")
        if tag is None:
            raise ScribbleFormatError(f"a <polygon> in {xml_path} has no <tag> (class name)")
        points = tuple(_point(point, xml_path) for point in polygon.iter("point"))
        if points:
            scribbles.append(Scribble(scribble_class_id(tag, xml_path), points))
    return scribbles


def render_scribbles(scribbles: list[Scribble], size: tuple[int, int]) -> Image.Image:
    """Draw scribbles on a ``size`` = (width, height) 'L' image filled with ``IGNORE_INDEX``."""
    width, height = size
    mask = Image.new("L", size, IGNORE_INDEX)
    draw = ImageDraw.Draw(mask)
    radius = SCRIBBLE_WIDTH // 2
    for scribble in scribbles:
        points = [(min(max(x, 0), width - 1), min(max(y, 0), height - 1)) for x, y in scribble.points]
        draw.line(points, fill=scribble.class_id, width=SCRIBBLE_WIDTH)
        for x, y in points:  # square caps: segment ends (and single clicks) get full 3x3 coverage
            draw.rectangle((x - radius, y - radius, x + radius, y + radius), fill=scribble.class_id)
    return mask


def convert_scribble_xml(xml_path: Path, out_path: Path, size: tuple[int, int]) -> Image.Image:
    """Render ``xml_path`` as a mask of ``size`` = (width, height), write it to ``out_path`` (an 'L'
    PNG, atomically); return it."""
    mask = render_scribbles(read_scribbles(xml_path), size)
    write_label_png(np.asarray(mask), out_path, palette=False)
    return mask


def _point(element: ElementTree.Element, source: Path) -> tuple[int, int]:
    try:
        return round(float(element.findtext("X", ""))), round(float(element.findtext("Y", "")))
    except ValueError:
        raise ScribbleFormatError(f"a <point> in {source} lacks numeric <X>/<Y>: "
                                  f"{ElementTree.tostring(element, encoding='unicode')!r}") from None
