"""``rloss annotate``'s page in a real headless browser (Debian's chromium and chromedriver through
Selenium; nothing is downloaded): open an image, pick classes, draw strokes with the mouse, undo one,
wait for the mask overlay, save, and check the written PNGs against what was drawn.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install chromium chromium-driver``;
.ci/run installs them); without them the test fails unless RLOSS_SKIP_BROWSER=1.
RLOSS_ANNOTATE_SCREENSHOT=PATH also saves a screenshot of the page there (docs/annotate.png).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_annotate import reference_scribbles

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DATA = Path(__file__).parent / "data"
PHOTO = "2011_003223"  # 500 x 375, a sheep on grass
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,800")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if os.environ.get("RLOSS_SKIP_BROWSER") == "1":
        pytest.skip("RLOSS_SKIP_BROWSER=1")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver "
                    "(or set RLOSS_SKIP_BROWSER=1 to skip this test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(URL, images, output) of a server on a free loopback port, in a thread."""
    import uvicorn

    from rloss.data.constants import VOC_CLASSES
    from rloss.tools.annotate import listen
    from rloss.tools.annotate.engine import Engine
    from rloss.tools.annotate.server import create_app
    from rloss.tools.annotate.store import Store

    images, output = tmp_path / "images", tmp_path / "output"
    images.mkdir()
    shutil.copy(DATA / f"{PHOTO}.jpg", images / f"{PHOTO}.jpg")
    engine = Engine()
    engine.warm_up()
    sock = listen("127.0.0.1", 0)
    uv = uvicorn.Server(uvicorn.Config(create_app(Store(images, output, list(VOC_CLASSES)), engine),
                                       log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/", images, output
    uv.should_exit = True
    thread.join(10)
    sock.close()


def wait(condition: Callable[[], object], seconds: float = 20, what: str = "") -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.mark.slow
def test_draw_wait_for_the_mask_and_save(browser, server: tuple[str, Path, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, images, output = server
    driver = browser
    driver.get(url)
    wait(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), what="the page")
    assert driver.execute_script("return annot.id") == PHOTO
    assert driver.find_element(By.ID, "progress").text == "0 / 1 done"
    viewport = driver.find_element(By.ID, "viewport")
    scale, tx, ty = driver.execute_script("return [annot.scale, annot.tx, annot.ty]")
    box = driver.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.width, b.height]", viewport)

    def drag(points: list[tuple[float, float]]) -> None:
        """Mouse-drag through image points (x, y); the viewport's centre is the pointer's origin."""
        screen = [(tx + x * scale - box[0] / 2, ty + y * scale - box[1] / 2) for x, y in points]
        chain = ActionChains(driver, duration=10).move_to_element_with_offset(viewport, *map(round, screen[0]))
        chain = chain.click_and_hold()
        for sx, sy in screen[1:]:
            chain = chain.move_to_element_with_offset(viewport, round(sx), round(sy))
        chain.release().perform()

    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("1")  # key 1: the first class, background
    drawn = [(0, [(30, 40), (450, 40)]), (0, [(40, 330), (150, 330)])]
    drag(drawn[0][1])
    driver.find_element(By.CSS_SELECTOR, ".class-button[data-class-id='17']").click()  # sheep
    for _ in range(3):
        body.send_keys("]")  # brush 6 -> 9 px
    drawn.append((17, [(180, 200), (260, 190), (300, 210)]))
    drag(drawn[2][1])
    body.send_keys("1")
    drag(drawn[1][1])
    drag([(300, 100), (350, 120)])  # a stroke that is taken back
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()

    strokes = driver.execute_script("return annot.strokes")
    assert [s["class"] for s in strokes] == [0, 17, 0] and [s["radius"] for s in strokes] == [6, 9, 9]
    assert driver.execute_script("return annot.redo.length") == 1
    for (_, points), stroke in zip([drawn[0], drawn[2], drawn[1]], strokes, strict=True):
        ends = [stroke["points"][0], stroke["points"][-1]]  # where the mouse went
        for (x, y), sent in zip([points[0], points[-1]], ends, strict=True):
            assert abs(sent[0] - x) <= 1.5 and abs(sent[1] - y) <= 1.5, (points, stroke["points"])

    wait(lambda: driver.execute_script(
        "const o = document.getElementById('overlay'); return annot.shown === annot.seq "
        "&& o.src.startsWith('data:image/png') && o.complete && o.naturalWidth === 500"), what="the mask overlay")
    assert not driver.execute_script("return annot.lastError")
    if os.environ.get("RLOSS_ANNOTATE_SCREENSHOT"):
        driver.save_screenshot(os.environ["RLOSS_ANNOTATE_SCREENSHOT"])

    driver.find_element(By.ID, "save").click()
    wait(lambda: driver.execute_script("return document.getElementById('save').dataset.saved === '1'"), what="the save")
    assert driver.find_element(By.ID, "progress").text == "1 / 1 done"
    scribbles = np.asarray(Image.open(output / "scribbles" / f"{PHOTO}.png"))
    assert np.array_equal(scribbles, reference_scribbles(strokes, (375, 500)))
    assert set(np.unique(scribbles)) == {0, 17, 255}
    mask = Image.open(output / "masks" / f"{PHOTO}.png")
    assert mask.mode == "P" and mask.size == (500, 375)
    mask_ids = np.asarray(mask)
    assert set(np.unique(mask_ids)) == {0, 17}
    for label in (0, 17):
        assert (mask_ids[scribbles == label] == label).mean() > 0.95
    assert (output / "splits" / "train.txt").read_text() == f"{PHOTO}\n"

    driver.refresh()  # reopening restores the strokes as the base
    wait(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), what="the page again")
    base = driver.execute_script("return annot.base")
    assert base is not None and sum(base[1::2]) == 500 * 375
    restored = np.repeat(np.array(base[0::2]), base[1::2]).reshape(375, 500)
    assert np.array_equal(restored, scribbles)
