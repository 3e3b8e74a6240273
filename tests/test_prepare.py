"""``rloss data prepare`` end to end against miniature archives served on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prepare_fixtures import (
    ALL_IDS,
    HEIGHT,
    SBD_CLASS,
    SCRIBBLES,
    TRAIN_AUG,
    VOC_VAL,
    WIDTH,
    build_archives,
    build_scribble_zip,
    build_tar,
    md5,
    sbd_mask,
    scribble_xml,
    serve,
    voc_mask,
)
from rloss.data.archives import UnsafeArchiveError, safe_extract
from rloss.data.download import Checksum, DownloadError, download
from rloss.data.scribbles import UnknownScribbleClassError, read_scribbles
from rloss.tools.prepare_data import SCRIBBLE_DIR, main, prepare, resolve_archives

VOC_TAR = "VOCtrainval_11-May-2012.tar"


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, Path]:
    return build_archives(tmp_path / "archives")


def checksum_args(archives: dict[str, Path]) -> list[str]:
    """``--checksum`` options pinning the miniature archives."""
    return [arg for name, path in archives.items() for arg in ("--checksum", f"{name}=md5:{md5(path)}")]


def run_main(root: Path, archives: dict[str, Path], *options: str) -> int:
    return main(["--root", str(root), *checksum_args(archives), *options])


def voc_dir(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L", path
        return np.asarray(image)


def test_full_prepare_over_http(tmp_path: Path, archives: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    with serve({path.name: path.read_bytes() for path in archives.values()}) as server:
        assert run_main(root, archives, "--base-url", server.base_url) == 0
    assert sorted(path for path, _ in server.requests) == sorted(f"/{path.name}" for path in archives.values())

    voc = voc_dir(root)
    splits = voc / "ImageSets" / "Segmentation"
    assert (splits / "train_aug.txt").read_text().split() == list(TRAIN_AUG)
    assert (splits / "val.txt").read_text().split() == list(VOC_VAL)
    # training images in SBD take the SBD mask; the others, and every val image, the VOC mask
    for image_id in TRAIN_AUG:
        expected = voc_mask() if image_id == "2007_000032" else sbd_mask()
        np.testing.assert_array_equal(read_png(voc / "SegmentationClassAug" / f"{image_id}.png"), expected)
    for image_id in VOC_VAL:
        np.testing.assert_array_equal(read_png(voc / "SegmentationClassAug" / f"{image_id}.png"), voc_mask())

    scribble = read_png(voc / "pascal_2012_scribble" / "2008_000003.png")
    assert scribble.shape == (HEIGHT, WIDTH)
    assert sorted(p.stem for p in (voc / "pascal_2012_scribble").glob("*.png")) == list(ALL_IDS)
    assert len(list((root / "scribble_annotation" / "pascal_2012").glob("*.xml"))) == len(ALL_IDS)
    sbd = root / "benchmark_RELEASE" / "dataset"
    assert (sbd / "cls").is_dir() and not (sbd / "img").exists() and not (sbd / "inst").exists()

    out = capsys.readouterr().out
    assert f"train_aug      {len(TRAIN_AUG)} images" in out and f"val            {len(VOC_VAL)} images" in out
    coverage = np.mean(scribble != 255)
    assert f"{100 * coverage:.2f}% of their pixels labeled" in out
    assert "scribbles: no published checksum" not in out  # pinned by --checksum here
    assert f"rloss fit --data rloss.data.voc.VOCScribbleDataModule --data.root {root.resolve()} " in out


def test_scribble_pixels_follow_the_xml_points(tmp_path: Path, archives: dict[str, Path]) -> None:
    report = prepare(tmp_path / "data", resolve_archives(checksums=pinned(archives)), from_dir=archives["voc"].parent)
    mask = read_png(voc_dir(report.root) / "pascal_2012_scribble" / "2007_000032.png")
    background, plane, table = SCRIBBLES
    assert background[0] == "background" and plane[0] == "plane" and table[0] == "table"
    # every point and the segments between them carry the class id (background 0, plane 1, table 11) ...
    assert (mask[3, 2:21] == 0).all() and (mask[3:9, 20] == 0).all()
    assert (mask[20, 5:31] == 1).all()
    assert mask[27, 35] == 11
    # ... 3 pixels wide: one pixel on each side of a horizontal segment, not two
    assert (mask[19, 5:31] == 1).all() and (mask[21, 5:31] == 1).all()
    assert (mask[18, 8:28] == 255).all() and (mask[22, 8:28] == 255).all()
    # a single click is a 3x3 dot
    assert (mask[26:29, 34:37] == 11).all() and mask[25, 35] == 255 and mask[27, 33] == 255
    assert set(np.unique(mask).tolist()) == {0, 1, 11, 255}
    labeled = np.count_nonzero(mask != 255)
    assert report.scribbled == len(TRAIN_AUG)
    assert report.coverage == pytest.approx(labeled / mask.size)


def pinned(archives: dict[str, Path]) -> dict[str, Checksum]:
    return {name: Checksum("md5", md5(path)) for name, path in archives.items()}


def test_layout_loads_in_the_voc_datamodule(tmp_path: Path, archives: dict[str, Path]) -> None:
    voc = pytest.importorskip("rloss.data.voc")
    report = prepare(tmp_path / "data", resolve_archives(checksums=pinned(archives)), from_dir=archives["voc"].parent)
    datamodule = voc.VOCScribbleDataModule(root=str(report.root), scribble_dir=SCRIBBLE_DIR, num_workers=0)
    datamodule.setup("fit")
    item = datamodule.train_dataset[0]
    image, scribble, mask = item["image"], item["scribble"], item["mask"]
    assert image.ndim == 3 and image.shape[0] == 3 and image.shape[1:] == scribble.shape == mask.shape
    assert float(image.min()) >= 0 and float(image.max()) <= 255 and image.is_floating_point()
    assert str(scribble.dtype) == str(mask.dtype) == "torch.int64"
    assert set(scribble.unique().tolist()) <= {0, 1, 11, 254, 255}
    assert set(mask.unique().tolist()) <= {0, SBD_CLASS, 12, 254, 255}


def test_resume_after_a_download_cut_half_way(tmp_path: Path, archives: dict[str, Path]) -> None:
    root = tmp_path / "data"
    body = archives["voc"].read_bytes()
    with serve({path.name: path.read_bytes() for path in archives.values()}) as server:
        server.cut_next.add(VOC_TAR)
        assert run_main(root, archives, "--base-url", server.base_url) == 0
    voc_requests = [rng for path, rng in server.requests if path == f"/{VOC_TAR}"]
    assert voc_requests == [None, f"bytes={len(body) // 2}-"]
    downloaded = root / "downloads" / VOC_TAR
    assert hashlib.md5(downloaded.read_bytes()).hexdigest() == md5(archives["voc"])
    assert not downloaded.with_name(VOC_TAR + ".part").exists()


def test_partial_file_is_kept_and_resumed_by_a_later_run(tmp_path: Path, archives: dict[str, Path]) -> None:
    dest = tmp_path / "downloads" / VOC_TAR
    body = archives["voc"].read_bytes()
    expected = Checksum("md5", md5(archives["voc"]))
    with serve({VOC_TAR: body}) as server:
        server.cut_next.add(VOC_TAR)
        with pytest.raises(DownloadError, match="partial file kept"):
            download(server.url(VOC_TAR), dest, expected, attempts=1)
        part = dest.with_name(VOC_TAR + ".part")
        assert part.read_bytes() == body[:len(body) // 2] and not dest.exists()
        download(server.url(VOC_TAR), dest, expected)
    assert server.requests[-1] == (f"/{VOC_TAR}", f"bytes={len(body) // 2}-")
    assert dest.read_bytes() == body and not part.exists()


def test_checksum_mismatch_is_never_trusted(tmp_path: Path, archives: dict[str, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    wrong = "0" * 32
    with serve({path.name: path.read_bytes() for path in archives.values()}) as server:
        status = run_main(root, archives, "--base-url", server.base_url, "--checksum", f"voc=md5:{wrong}")
    assert status == 2
    error = capsys.readouterr().err
    assert f"{VOC_TAR}" in error and f"expected md5 {wrong}" in error and f"found {md5(archives['voc'])}" in error
    assert not (root / "downloads" / VOC_TAR).exists() and not (root / "VOCdevkit").exists()
    assert (root / "downloads" / f"{VOC_TAR}.rejected").exists()


def test_checksum_mismatch_of_an_archive_on_disk(tmp_path: Path, archives: dict[str, Path]) -> None:
    checksums = pinned(archives) | {"sbd": Checksum("sha256", "f" * 64)}
    with pytest.raises(ValueError, match=r"benchmark\.tgz: expected sha256 f{64}, found [0-9a-f]{64}"):
        prepare(tmp_path / "data", resolve_archives(checksums=checksums), from_dir=archives["sbd"].parent)
    assert archives["sbd"].exists()  # the user's file is reported, not deleted


@pytest.mark.parametrize("member", ["../evil.txt", "VOCdevkit/../../evil.txt", "{tmp_path}/evil.txt"])
def test_tar_with_an_escaping_member_is_rejected(tmp_path: Path, member: str, capsys: pytest.CaptureFixture) -> None:
    member = member.format(tmp_path=tmp_path)
    (tmp_path / "archives").mkdir()
    bad = build_tar(tmp_path / "archives" / VOC_TAR, {"VOCdevkit/VOC2012/ok.txt": b"ok", member: b"evil"})
    status = main(["--root", str(tmp_path / "data"), "--from-dir", str(bad.parent), "--checksum", f"voc={md5(bad)}"])
    assert status == 2
    assert f"unsafe member {member!r} in {bad}" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "VOCdevkit").exists()


def test_escaping_links_and_zip_members_are_rejected(tmp_path: Path) -> None:
    import tarfile
    import zipfile

    link_tar = tmp_path / "link.tar"
    with tarfile.open(link_tar, "w") as tar:
        info = tarfile.TarInfo("VOCdevkit/link")
        info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        safe_extract(link_tar, tmp_path / "out")
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as zipped:
        zipped.writestr("../evil.xml", "<annotation/>")
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil\.xml'"):
        safe_extract(bad_zip, tmp_path / "out")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "evil.xml").exists()


def test_scribble_xml_with_an_unknown_class(tmp_path: Path, archives: dict[str, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    documents = {image_id: scribble_xml() for image_id in ALL_IDS}
    documents["2008_000010"] = scribble_xml((("unicorn", ((1, 1), (5, 5))),))
    build_scribble_zip(archives["scribbles"], documents)
    assert run_main(tmp_path / "data", archives, "--from-dir", str(archives["voc"].parent)) == 2
    error = capsys.readouterr().err
    assert "unknown scribble class 'unicorn'" in error and "2008_000010.xml" in error
    assert not (voc_dir(tmp_path / "data") / "pascal_2012_scribble" / "2008_000010.png").exists()


def test_scribble_class_names_map_to_voc_ids(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    tags = ("background", "plane", "bike", "table", "plant", "monitor", "tvmonitor", "Person")
    xml.write_bytes(scribble_xml(tuple((tag, ((0, 0),)) for tag in tags)))
    assert [s.class_id for s in read_scribbles(xml)] == [0, 1, 2, 11, 16, 20, 20, 15]
    xml.write_bytes(scribble_xml((("sky", ((0, 0),)),)))
    with pytest.raises(UnknownScribbleClassError, match=f"'sky' in {xml}"):
        read_scribbles(xml)


def test_second_run_does_no_work(tmp_path: Path, archives: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    with serve({path.name: path.read_bytes() for path in archives.values()}) as server:
        assert run_main(root, archives, "--base-url", server.base_url) == 0
        files = {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}
        requests = len(server.requests)
        capsys.readouterr()
        assert run_main(root, archives, "--base-url", server.base_url) == 0
    assert len(server.requests) == requests
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()} == files
    assert "already prepared, nothing to do" in capsys.readouterr().out


def test_rerun_extracts_again_what_was_deleted(tmp_path: Path, archives: dict[str, Path]) -> None:
    specs = resolve_archives(checksums=pinned(archives))
    root = prepare(tmp_path / "data", specs, from_dir=archives["voc"].parent).root
    shutil.rmtree(root / "scribble_annotation")
    shutil.rmtree(voc_dir(root) / "pascal_2012_scribble")
    report = prepare(root, specs, from_dir=archives["voc"].parent)
    assert report.actions == ["extracted scribble_annotation.zip", f"wrote {len(ALL_IDS)} scribble masks"]


def test_from_dir_without_the_archive_names_the_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--root", str(tmp_path / "data"), "--from-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / VOC_TAR} not found" in error and "host.robots.ox.ac.uk" in error


def test_unpinned_scribble_archive_reports_its_sha256(tmp_path: Path, archives: dict[str, Path]) -> None:
    checksums = {name: checksum for name, checksum in pinned(archives).items() if name != "scribbles"}
    report = prepare(tmp_path / "data", resolve_archives(checksums=checksums), from_dir=archives["voc"].parent)
    digest = hashlib.sha256(archives["scribbles"].read_bytes()).hexdigest()
    assert report.unpinned == {"scribbles": digest}
    assert f"SHA-256 of the file used: {digest}" in report.render()


def test_url_overrides() -> None:
    specs = {spec.name: spec for spec in resolve_archives("http://mirror/x/", {"sbd": "http://other/b.tgz"})}
    assert specs["voc"].url == f"http://mirror/x/{VOC_TAR}"
    assert specs["sbd"].url == "http://other/b.tgz"
    assert specs["voc"].checksum == Checksum("md5", "6cd6e144f989b92b3379bac3b3de84fd")
