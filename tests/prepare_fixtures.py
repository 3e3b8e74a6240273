"""Miniature VOC2012 / SBD / ScribbleSup archives in their real layouts, and a local HTTP server.

The archives mirror the real ones: ``VOCtrainval_11-May-2012.tar`` holds ``VOCdevkit/VOC2012``
(JPEG images, palette PNG masks with a 255 boundary band, split lists), ``benchmark.tgz`` holds
``benchmark_RELEASE/dataset`` (``cls/*.mat`` with a ``GTcls`` struct whose ``Segmentation`` field
is the mask, ``train.txt``, ``val.txt``; ``img/`` and ``inst/`` as placeholders) and ``scribble_annotation.zip`` holds
``scribble_annotation/pascal_2012/*.xml`` in the ScribbleSup format.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from rloss.data.constants import voc_palette

WIDTH, HEIGHT = 40, 30

VOC_TRAIN = ("2007_000032", "2008_000003")
VOC_VAL = ("2007_000033", "2008_000009")
SBD_TRAIN = ("2008_000003", "2008_000009", "2008_000010")  # 2008_000009 is VOC val: not in train_aug
SBD_VAL = ("2008_000011",)
TRAIN_AUG = ("2007_000032", "2008_000003", "2008_000010", "2008_000011")
ALL_IDS = tuple(sorted({*VOC_TRAIN, *VOC_VAL, *SBD_TRAIN, *SBD_VAL}))

VOC_CLASS, SBD_CLASS = 12, 15  # dog in the VOC masks, person in the SBD masks

# One scribble list per image: (ScribbleSup class tag, points as (x, y)). Same for every image.
SCRIBBLES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("background", ((2, 3), (20, 3), (20, 8))),
    ("plane", ((5, 20), (30, 20))),
    ("table", ((35, 27),)),
)


def voc_mask() -> np.ndarray:
    """The VOC mask of an image: a ``VOC_CLASS`` box with a 255 boundary band."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[8:22, 10:30] = 255
    mask[9:21, 11:29] = VOC_CLASS
    return mask


def sbd_mask() -> np.ndarray:
    """The SBD mask of an image: a ``SBD_CLASS`` box, no boundary band."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[5:25, 5:35] = SBD_CLASS
    return mask


def scribble_xml(scribbles: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = SCRIBBLES) -> bytes:
    """A ScribbleSup XML document."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "segmented").text = "1"
    size = ElementTree.SubElement(root, "size")
    ElementTree.SubElement(size, "width").text = str(WIDTH)
    ElementTree.SubElement(size, "height").text = str(HEIGHT)
    for tag, points in scribbles:
        polygon = ElementTree.SubElement(root, "polygon")
        ElementTree.SubElement(polygon, "tag").text = tag
        for x, y in points:
            point = ElementTree.SubElement(polygon, "point")
            ElementTree.SubElement(point, "X").text = str(x)
            ElementTree.SubElement(point, "Y").text = str(y)
    return ElementTree.tostring(root)


def build_voc_tar(path: Path) -> Path:
    """``VOCtrainval_11-May-2012.tar`` in miniature."""
    base = "VOCdevkit/VOC2012"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for image_id in ALL_IDS:
            pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            _add(tar, f"{base}/JPEGImages/{image_id}.jpg", _image_bytes(Image.fromarray(pixels), "JPEG"))
        for image_id in (*VOC_TRAIN, *VOC_VAL):
            mask = Image.frombytes("P", (WIDTH, HEIGHT), voc_mask().tobytes())
            mask.putpalette(voc_palette())
            _add(tar, f"{base}/SegmentationClass/{image_id}.png", _image_bytes(mask, "PNG"))
        for split, ids in (("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL)):
            _add(tar, f"{base}/ImageSets/Segmentation/{split}.txt", _lines(ids))
    return path


def build_sbd_tgz(path: Path) -> Path:
    """``benchmark.tgz`` in miniature."""
    base = "benchmark_RELEASE/dataset"
    with tarfile.open(path, "w:gz") as tar:
        for image_id in (*SBD_TRAIN, *SBD_VAL):
            buffer = io.BytesIO()
            gt = {"Segmentation": sbd_mask(), "Boundaries": np.zeros((1, 1)), "CategoriesPresent": SBD_CLASS}
            scipy.io.savemat(buffer, {"GTcls": gt})
            _add(tar, f"{base}/cls/{image_id}.mat", buffer.getvalue())
            _add(tar, f"{base}/img/{image_id}.jpg", b"not needed")
            _add(tar, f"{base}/inst/{image_id}.mat", b"not needed")
        _add(tar, f"{base}/train.txt", _lines(SBD_TRAIN))
        _add(tar, f"{base}/val.txt", _lines(SBD_VAL))
    return path


def build_scribble_zip(path: Path, documents: Mapping[str, bytes] | None = None) -> Path:
    """``scribble_annotation.zip`` in miniature; ``documents`` maps image ids to XML (default: all images)."""
    documents = documents if documents is not None else {image_id: scribble_xml() for image_id in ALL_IDS}
    with zipfile.ZipFile(path, "w") as zipped:
        for image_id, document in documents.items():
            zipped.writestr(f"scribble_annotation/pascal_2012/{image_id}.xml", document)
    return path


def build_tar(path: Path, members: Mapping[str, bytes]) -> Path:
    """A tar with the given member names and contents (names are not checked: used for unsafe archives)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            _add(tar, name, data)
    return path


def build_archives(folder: Path) -> dict[str, Path]:
    """The three miniature archives in ``folder``, by archive name."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "voc": build_voc_tar(folder / "VOCtrainval_11-May-2012.tar"),
        "sbd": build_sbd_tgz(folder / "benchmark.tgz"),
        "scribbles": build_scribble_zip(folder / "scribble_annotation.zip"),
    }


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class ArchiveServer:
    """Files served by a threading HTTP server on 127.0.0.1 (ephemeral port), with ``Range`` support.

    ``requests`` records ``(path, Range header or None)`` for every GET; a name added to
    ``cut_next`` gets its next response cut half-way (full ``Content-Length`` announced, half sent).
    """

    files: dict[str, bytes]
    port: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_next: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@contextmanager
def serve(files: Mapping[str, bytes]) -> Iterator[ArchiveServer]:
    """Run an :class:`ArchiveServer` for ``files`` (name -> bytes) until the block ends."""
    state = ArchiveServer(dict(files))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.lstrip("/")
            state.requests.append((self.path, self.headers.get("Range")))
            if name not in state.files:
                self.send_error(404)
                return
            body = state.files[name]
            start = _range_start(self.headers.get("Range"))
            if start >= len(body) > 0:
                self.send_error(416)
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if name in state.cut_next:
                state.cut_next.discard(name)
                self.wfile.write(body[start:start + (len(body) - start) // 2])
                self.close_connection = True
            else:
                self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _range_start(header: str | None) -> int:
    """The first byte asked for by a ``Range: bytes=N-`` header (0 without one)."""
    if not header:
        return 0
    return int(header.removeprefix("bytes=").split("-")[0])


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _image_bytes(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _lines(ids: tuple[str, ...]) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()
