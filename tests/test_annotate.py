"""``rloss annotate``'s HTTP API in-process (Starlette's TestClient): listing, image display, dense
mask, save round trip (the written PNGs checked pixel by pixel against the strokes sent), and the
refusals: path traversal, links out of --images, body limit, bad strokes, unknown classes, corrupt
images; the command line's input errors; a checkpoint's prediction as the starting mask."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from helpers import save_tiny_checkpoint
from rloss.commands import main as rloss_main
from rloss.data.constants import voc_palette
from rloss.tools.annotate.engine import Engine
from rloss.tools.annotate.server import create_app
from rloss.tools.annotate.store import Store
from rloss.tools.annotate.strokes import encode_base
from rloss.tools.prior import load_predictor
from rloss.tools.propagate import propagate

DATA = Path(__file__).parent / "data"
PHOTO = "2011_003223"  # 500 x 375 RGB


def reference_scribbles(strokes: list[dict], size: tuple[int, int], base: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H,W) written from the stroke definition (every pixel centre within radius of a segment),
    over the whole grid at once: independent of rloss.tools.annotate.strokes."""
    height, width = size
    labels = np.full(size, 255, np.uint8) if base is None else base.copy()
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for stroke in strokes:
        points = np.asarray(stroke["points"], float)
        pairs = list(zip(points[:-1], points[1:], strict=True)) or [(points[0], points[0])]
        near = np.zeros(size, bool)
        for a, b in pairs:
            d = b - a
            t = ((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(d @ d, 1e-300) if d @ d > 0 else 0.0
            t = np.clip(t, 0, 1)
            near |= (xs - a[0] - t * d[0]) ** 2 + (ys - a[1] - t * d[1]) ** 2 <= stroke["radius"] ** 2
        labels[near] = 255 if stroke["class"] is None else stroke["class"]
    return labels


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine()
    engine.warm_up()
    return engine


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """images/: an RGB photo, a 16-bit grayscale PNG, a .npy slice, a corrupt PNG and a link to a
    file outside the folder; output/ (not yet created)."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(DATA / f"{PHOTO}.jpg", images / f"{PHOTO}.jpg")
    ramp = (np.arange(40 * 60).reshape(40, 60) * 20 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(images / "mri16.png")
    np.save(images / "slice.npy", np.linspace(-3.0, 5.0, 30 * 20, dtype=np.float32).reshape(30, 20))
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(secret)
    os.symlink(secret, images / "escape.png")
    return images, tmp_path / "output"


def client_for(images: Path, output: Path, engine: Engine, classes: list[str] | None = None, **kwargs) -> TestClient:
    from rloss.data.constants import VOC_CLASSES

    store = Store(images, output, list(classes or VOC_CLASSES))
    return TestClient(create_app(store, engine, **kwargs), base_url="http://127.0.0.1")


STROKES = [
    {"class": 0, "radius": 4, "points": [[10, 10], [200, 10], [200, 60]]},
    {"class": 17, "radius": 6.5, "points": [[250.3, 190.7], [330, 260], [380, 240]]},
    {"class": 0, "radius": 3, "points": [[20, 350]]},
    {"class": None, "radius": 5, "points": [[100, 5], [100, 20]]},  # eraser
]


def test_list_image_mask_save_round_trip(folders: tuple[Path, Path], engine: Engine) -> None:
    images, output = folders
    client = client_for(images, output, engine)
    session = client.get("/api/session").json()
    assert [i["id"] for i in session["images"]] == [PHOTO, "broken", "mri16", "slice"]  # no link out
    assert (session["done"], session["total"]) == (0, 4) and session["classes"][17]["name"] == "sheep"
    assert session["classes"][15]["color"] == "#" + bytes(voc_palette()[45:48]).hex()
    assert client.get("/").status_code == 200 and "app.js" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200

    info = client.get(f"/api/images/{PHOTO}").json()
    assert (info["height"], info["width"], info["channels"], info["base"]) == (375, 500, 3, None)
    shown = Image.open(io.BytesIO(client.get(f"/api/images/{PHOTO}/display.png").content))
    assert shown.mode == "RGB" and shown.size == (500, 375)
    assert np.array_equal(np.asarray(shown), np.asarray(Image.open(images / f"{PHOTO}.jpg").convert("RGB")))

    body = {"base": None, "strokes": STROKES}
    answer = client.post(f"/api/images/{PHOTO}/mask", json=body).json()
    assert answer["mask"].startswith("data:image/png;base64,") and answer["seconds"] < 5
    expected = reference_scribbles(STROKES, (375, 500))
    assert answer["labeled"] == int((expected != 255).sum())
    assert not output.exists()  # computing a mask writes nothing

    saved = client.post(f"/api/images/{PHOTO}/save", json=body).json()
    assert (saved["done"], saved["total"]) == (1, 4)
    scribbles = Image.open(output / "scribbles" / f"{PHOTO}.png")
    assert scribbles.mode == "L" and np.array_equal(np.asarray(scribbles), expected)
    mask = Image.open(output / "masks" / f"{PHOTO}.png")
    assert mask.mode == "P" and mask.getpalette()[: 3 * 21] == voc_palette()[: 3 * 21]
    rgb = np.asarray(Image.open(images / f"{PHOTO}.jpg").convert("RGB"), np.float32)
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(np.asarray(mask), propagate(image, torch.from_numpy(expected.astype(np.int64))).numpy())
    assert set(np.unique(np.asarray(mask))) == {0, 17}
    assert (output / "splits" / "train.txt").read_text() == f"{PHOTO}\n"
    assert (output / "classes.txt").read_text().splitlines()[17] == "sheep"
    assert (output / "images" / f"{PHOTO}.jpg").read_bytes() == (images / f"{PHOTO}.jpg").read_bytes()

    # reopening restores the strokes; more strokes on top, saved again: the id is listed once
    info = client.get(f"/api/images/{PHOTO}").json()
    assert info["done"] and info["base"] == encode_base(expected)
    more = [{"class": 5, "radius": 2, "points": [[400, 300], [450, 300]]}]
    client.post(f"/api/images/{PHOTO}/save", json={"base": info["base"], "strokes": more}).raise_for_status()
    written = np.asarray(Image.open(output / "scribbles" / f"{PHOTO}.png"))
    assert np.array_equal(written, reference_scribbles(more, (375, 500), expected))
    assert (output / "splits" / "train.txt").read_text() == f"{PHOTO}\n"

    # the folder DataModule reads what was saved
    from rloss.data.folder import ScribbleFolderDataModule

    item = ScribbleFolderDataModule(str(output), num_workers=0, verify=False).make_dataset("train").files
    assert set(item) == {PHOTO} and item[PHOTO]["scribble"] == output / "scribbles" / f"{PHOTO}.png"


def test_grayscale_and_array_images(folders: tuple[Path, Path], engine: Engine) -> None:
    images, output = folders
    client = client_for(images, output, engine, classes=["background", "RV", "Myo", "LV"])
    for image_id, size in (("mri16", (40, 60)), ("slice", (30, 20))):
        info = client.get(f"/api/images/{image_id}").json()
        assert (info["height"], info["width"], info["channels"]) == (*size, 1)
        shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/display.png").content)))
        assert shown.shape == size and shown.min() <= 2 and shown.max() >= 253  # scaled to 0..255
        strokes = [{"class": 3, "radius": 2, "points": [[2, 2], [8, 2]]},
                   {"class": 1, "radius": 2, "points": [[15, 25]]}]
        client.post(f"/api/images/{image_id}/save", json={"strokes": strokes}).raise_for_status()
        written = np.asarray(Image.open(output / "scribbles" / f"{image_id}.png"))
        assert np.array_equal(written, reference_scribbles(strokes, size))
    assert (output / "classes.txt").read_text() == "background\nRV\nMyo\nLV\n"


@pytest.mark.parametrize(
    "path",
    ["/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/%2Fetc%2Fpasswd", "/api/images/..", "/api/images/escape",
     "/api/images/escape/display.png", "/api/images/nothere/display.png", "/static/..%2F__init__.py",
     "/static/../server.py", "/api/images/..%2Fsecret/display.png"],
)
def test_paths_outside_the_images_are_refused(folders: tuple[Path, Path], engine: Engine, path: str) -> None:
    response = client_for(*folders, engine).get(path)
    assert response.status_code in (400, 404) and "error" in response.json()
    assert b"secret" not in response.content or b"no " in response.content


def test_link_out_is_refused_even_if_listed(folders: tuple[Path, Path], engine: Engine) -> None:
    """A listed image replaced by a link out of the folder after the listing is refused."""
    images, output = folders
    client = client_for(images, output, engine)
    (images / "mri16.png").unlink()
    os.symlink(images.parent / "secret.png", images / "mri16.png")
    assert client.get("/api/images/mri16/display.png").status_code == 404
    assert client.post("/api/images/mri16/save", json={"strokes": STROKES[2:3]}).status_code == 404
    assert not output.exists()


@pytest.mark.parametrize(
    ("strokes", "status", "words"),
    [
        ([{"class": 0, "radius": 3, "points": [[10, 10], [501, 10]]}], 400, "outside the 500x375 image"),
        ([{"class": 0, "radius": 3, "points": [[10, -1]]}], 400, "outside"),
        ([{"class": 21, "radius": 3, "points": [[10, 10]]}], 400, "unknown class 21"),
        ([{"class": "cat", "radius": 3, "points": [[10, 10]]}], 400, "unknown class"),
        ([{"class": 1, "radius": 0, "points": [[10, 10]]}], 400, "radius"),
        ([{"class": 1, "radius": 3, "points": []}], 400, "points"),
        ([{"class": 1, "radius": 3, "points": [[1, "x"]]}], 400, "finite number"),
        ("nope", 400, "strokes must be a list"),
        ([], 400, "no stroke"),
    ],
)
def test_bad_strokes_are_refused_and_nothing_written(
    folders: tuple[Path, Path], engine: Engine, strokes: object, status: int, words: str
) -> None:
    images, output = folders
    client = client_for(images, output, engine)
    good = [{"class": 1, "radius": 3, "points": [[50, 50]]}]
    body = {"strokes": (good + strokes) if isinstance(strokes, list) and strokes else strokes}
    response = client.post(f"/api/images/{PHOTO}/save", json=body)
    assert response.status_code == status and words in response.json()["error"], response.text
    assert not output.exists()


def test_bad_base_and_bodies(folders: tuple[Path, Path], engine: Engine) -> None:
    images, output = folders
    client = client_for(images, output, engine)
    url = f"/api/images/{PHOTO}/mask"
    assert "add up to" in client.post(url, json={"base": [255, 10], "strokes": []}).json()["error"]
    assert "unknown class" in client.post(url, json={"base": [30, 500 * 375], "strokes": []}).json()["error"]
    response = client.post(url, content=b'{"strokes": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    response = client.post(url, content=json.dumps({"strokes": []}), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415  # a cross-site form cannot post JSON without a CORS preflight
    huge = json.dumps({"strokes": [{"class": 1, "radius": 3, "points": [[1.5, 1.5]] * 900_000}]})
    assert len(huge) > 8 * 2**20
    response = client.post(f"/api/images/{PHOTO}/save", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    small = client_for(images, output, engine, body_limit=100)

    def chunks():  # no Content-Length: the limit holds while streaming
        yield b'{"strokes": ['
        yield b" " * 200
        yield b"]}"

    response = small.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert client.get("/api/session", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert not output.exists()


def test_corrupt_image_is_a_clear_error(folders: tuple[Path, Path], engine: Engine) -> None:
    images, output = folders
    client = client_for(images, output, engine)
    for response in (
        client.get("/api/images/broken"),
        client.get("/api/images/broken/display.png"),
        client.post("/api/images/broken/save", json={"strokes": STROKES[2:3]}),
    ):
        assert response.status_code == 422 and "broken.png: cannot decode the image" in response.json()["error"]
    assert not output.exists()


def test_checkpoint_prediction_is_the_starting_mask(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    path = tmp_path / "model.ckpt"
    model = save_tiny_checkpoint(path, num_classes=4, in_channels=1)
    with pytest.raises(ValueError, match="predicts 4 classes; expected 21"):
        load_predictor(path, 21, "--classes")
    engine = Engine(load_predictor(path, 4, "--classes"))
    engine.warm_up()  # a 1-channel network: the warm-up does not feed it its 3-channel noise
    images, output = folders
    client = client_for(images, output, engine, classes=["background", "RV", "Myo", "LV"])
    image = torch.from_numpy(np.asarray(Image.open(images / "mri16.png"), np.float32))[None, None]
    with torch.no_grad():
        expected = model(image).argmax(1)[0].numpy()
    first = engine.dense_mask("mri16", image[0].numpy(), np.full((40, 60), 255, np.uint8))
    assert np.array_equal(first, expected)  # no stroke: the prediction
    assert client.post("/api/images/mri16/mask", json={"strokes": []}).json()["mask"] is not None
    strokes = [{"class": 2, "radius": 3, "points": [[5, 5], [55, 5]]}]
    scribbles = reference_scribbles(strokes, (40, 60))
    refined = engine.dense_mask("mri16", image[0].numpy(), scribbles)
    assert (refined[scribbles == 2] == 2).mean() > 0.9
    with torch.no_grad():  # the strokes propagate with the network's probabilities as the prior
        prior = model(image).softmax(1)[0]
    assert np.array_equal(refined, propagate(image[0], torch.from_numpy(scribbles).long(), prior=prior).numpy())
    engine.predictor.prediction_size = 16  # as an ACDC checkpoint: predicted on a 16 x 16 copy, upsampled
    with torch.no_grad():
        small = model(torch.nn.functional.interpolate(image, size=(16, 16), mode="nearest-exact"))
    upsampled = torch.nn.functional.interpolate(small, size=(40, 60), mode="bilinear", align_corners=False)
    resized = engine.dense_mask("mri16-resized", image[0].numpy(), np.full((40, 60), 255, np.uint8))
    assert np.array_equal(resized, upsampled.argmax(1)[0].numpy())
    client.post("/api/images/mri16/save", json={"strokes": strokes}).raise_for_status()
    assert (output / "masks" / "mri16.png").is_file()


def cli_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert rloss_main(["annotate", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rloss: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_command_line_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture, folders: tuple[Path, Path]) -> None:
    images, output = folders
    (tmp_path / "empty").mkdir()
    assert "no such folder" in cli_error(capsys, "--images", str(tmp_path / "nope"), "--output", str(output))
    assert "holds no image" in cli_error(capsys, "--images", str(tmp_path / "empty"), "--output", str(output))
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "twice.txt").write_text("a\nb\na\n")
    for name, words in (("blank.txt", "lists no class name"), ("twice.txt", "repeats a"), ("none.txt", "no such file")):
        classes = str(tmp_path / name)
        assert words in cli_error(capsys, "--images", str(images), "--output", str(output), "--classes", classes)
    with pytest.raises(SystemExit) as exit_info:
        rloss_main(["annotate", "--images", str(images), "--output", str(output), "--port", "70000"])
    assert exit_info.value.code == 2 and "out of range" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        assert "cannot listen" in cli_error(capsys, "--images", str(images), "--output", str(output), "--port", port)
    output.mkdir()
    (output / "classes.txt").write_text("x\ny\n")
    assert "classes.txt lists 2 other classes" in cli_error(capsys, "--images", str(images), "--output", str(output))
    assert not (output / "scribbles").exists()
