"""``rloss data prepare acdc`` on the ACDC fixture (tests/data/acdc, real WSL4MIS files): local copies in
the three accepted layouts, downloads from 127.0.0.1 (no internet), resume, and the errors that name
missing or corrupt files. The manifest is the shipped one restricted to the fixture's files."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from prepare_fixtures import serve
from rloss.data import acdc_files
from rloss.data.acdc_files import SLICES_DIR, VOLUMES_DIR, read_manifest
from rloss.tools.prepare_data import main

FIXTURE = Path(__file__).parent / "data" / "acdc"
FILES = sorted(path.relative_to(FIXTURE).as_posix() for path in FIXTURE.rglob("*.h5"))
SLICE = f"{SLICES_DIR}/patient041_frame01_slice_3.h5"
VOLUME = f"{VOLUMES_DIR}/patient091_frame09.h5"
SHIPPED = acdc_files.MANIFEST


@pytest.fixture(autouse=True)
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shipped manifest restricted to the fixture, installed as the manifest ``main`` reads."""
    shipped = read_manifest(SHIPPED)
    restricted = {name: shipped[name] for name in FILES}
    path = tmp_path / "manifest.txt"
    path.write_text("".join(f"{digest}  {name}\n" for name, digest in restricted.items()))
    monkeypatch.setattr(acdc_files, "MANIFEST", path)
    return restricted


def run(root: Path, *options: str) -> int:
    return main(["acdc", "--root", str(root), *options])


def fixture_bytes() -> dict[str, bytes]:
    return {name: (FIXTURE / name).read_bytes() for name in FILES}


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    """stderr from the ``rloss: error:`` line on (progress bars before it)."""
    err = capsys.readouterr().err
    return err[err.index("rloss: error:"):].splitlines()


def assert_prepared(root: Path) -> None:
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()) == FILES
    for name in FILES:
        assert (root / name).read_bytes() == (FIXTURE / name).read_bytes(), name


def test_shipped_manifest_and_fixture() -> None:
    shipped = read_manifest(SHIPPED)
    assert len(shipped) == 2_102
    assert sum(name.startswith(f"{SLICES_DIR}/") for name in shipped) == 1_902
    assert sum(name.startswith(f"{VOLUMES_DIR}/") for name in shipped) == 200
    # two patients in different folds, both frames each: their volumes and some of their slices
    volumes = [name for name in FILES if name.startswith(VOLUMES_DIR)]
    assert [Path(name).stem for name in volumes] == [
        "patient041_frame01", "patient041_frame11", "patient091_frame01", "patient091_frame09"]
    for volume in volumes:
        assert len([n for n in FILES if n.startswith(f"{SLICES_DIR}/{Path(volume).stem}_slice_")]) == 2
    assert sum((FIXTURE / name).stat().st_size for name in FILES) < 2_000_000
    with h5py.File(FIXTURE / VOLUME) as file:
        image, label, scribble = (file[key][:] for key in ("image", "label", "scribble"))
    assert image.dtype == np.float32 and label.dtype == np.uint8 and scribble.dtype == np.uint16
    assert image.ndim == 3 and image.shape == label.shape == scribble.shape
    assert set(np.unique(label)) <= {0, 1, 2, 3} and set(np.unique(scribble)) <= {0, 1, 2, 3, 4}


@pytest.mark.parametrize("layout", [".", "ACDC", "data/ACDC"])
def test_from_dir_layouts(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "clone"
    shutil.copytree(FIXTURE, source / layout)
    root = tmp_path / "data"
    assert run(root, "--from-dir", str(source)) == 0
    assert_prepared(root)
    assert (root / SLICE).stat().st_ino == (source / layout / SLICE).stat().st_ino  # hard-linked
    out = capsys.readouterr().out
    assert f"({len(FILES)} fetched, 0 already in place)" in out
    assert f"rloss fit --config configs/experiments/acdc/unet.yaml --data.root {root.resolve()}" in out


def test_download_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    with serve(fixture_bytes()) as server:
        assert run(root, "--base-url", server.base_url + "/") == 0
        assert sorted(path for path, _ in server.requests) == [f"/{name}" for name in FILES]
        assert_prepared(root)

        server.requests.clear()
        capsys.readouterr()
        assert run(root, "--base-url", server.base_url) == 0
        assert server.requests == []
        assert f"ACDC ready in {root.resolve()} ({len(FILES)} already in place)" in capsys.readouterr().out

        # a corrupt file is downloaded again; a partial download is resumed where it stopped
        (root / SLICE).write_bytes(b"corrupt")
        (root / VOLUME).unlink()
        half = (FIXTURE / VOLUME).read_bytes()[:1000]
        (root / f"{VOLUME}.part").write_bytes(half)
        assert run(root, "--base-url", server.base_url) == 0
        assert sorted(server.requests) == [(f"/{SLICE}", None), (f"/{VOLUME}", "bytes=1000-")]
    assert_prepared(root)


def test_corrupt_and_missing_downloads_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = fixture_bytes()
    files[SLICE] = b"not the file"
    del files[VOLUME]
    root = tmp_path / "data"
    with serve(files) as server:
        assert run(root, "--base-url", server.base_url) == 2
    lines = error_lines(capsys)
    assert lines[0] == (f"rloss: error: data prepare acdc: ACDC in {root.resolve()}: 2 of {len(FILES)} files missing "
                        "or corrupt (verified files are kept; run again to retry):")
    assert lines[1].startswith(f"  {server.url(SLICE)}: SHA-256 ") and "kept as" in lines[1]
    assert lines[2] == f"  HTTP 404 Not Found for {server.url(VOLUME)}"
    assert len(lines) == 3
    assert not (root / SLICE).exists() and (root / f"{SLICE}.rejected").is_file()
    assert all((root / name).is_file() for name in FILES if name not in (SLICE, VOLUME))


def test_corrupt_and_missing_local_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "ACDC"
    shutil.copytree(FIXTURE, source)
    (source / SLICE).write_bytes(b"not the file")
    (source / VOLUME).unlink()
    root = tmp_path / "data"
    (root / SLICES_DIR).mkdir(parents=True)
    (root / SLICE).write_bytes(b"an earlier corrupt copy")
    assert run(root, "--from-dir", str(source)) == 2
    lines = error_lines(capsys)
    assert lines[1].startswith(f"  {source / SLICE}: SHA-256 ") and lines[2:] == [f"  {source / VOLUME}: missing"]
    assert not list(root.rglob(".*.tmp"))


def test_many_failures_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(acdc_files, "MAX_NAMED", 3)
    (tmp_path / "empty" / SLICES_DIR).mkdir(parents=True)
    assert run(tmp_path / "data", "--from-dir", str(tmp_path / "empty")) == 2
    lines = error_lines(capsys)
    assert len(lines) == 5 and lines[-1] == f"  ... and {len(FILES) - 3} more"


def test_unreachable_server_stops_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with serve({}) as server:
        url = server.base_url
    assert run(tmp_path / "data", "--base-url", url) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"rloss: error: data prepare acdc: cannot reach {url}/{SLICES_DIR}/")


@pytest.mark.parametrize("argv", [["acdc", "--root", "FILE"], ["voc", "--root", "FILE"], ["--root", "FILE"]])
def test_root_that_is_a_file(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(SystemExit) as exit:
        main([str(file) if arg == "FILE" else arg for arg in argv])
    assert exit.value.code == 2
    assert f"argument --root: {file} exists and is not a folder" in capsys.readouterr().err.splitlines()[0]


def test_bad_from_dir_and_unknown_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(tmp_path / "data", "--from-dir", str(tmp_path)) == 2
    assert f"rloss: error: data prepare acdc: --from-dir {tmp_path}: no {SLICES_DIR}/" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["coco", "--root", str(tmp_path)])
    assert exit.value.code == 2
    assert "rloss: error: rloss data prepare: unknown dataset 'coco' (choose from voc, acdc)" in capsys.readouterr().err
