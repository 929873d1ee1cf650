"""The web page in a real browser: Playwright driving the system's Chromium against a live uvicorn server.

Needs the Python package ``playwright`` (``browser`` extra) and a Chromium binary (Debian:
``apt-get install -y chromium``; ``playwright install`` is not needed). ``FPLIIF_CHROMIUM`` may name the
binary. Screenshots go to the test's tmp dir and, if ``FPLIIF_SCREENSHOT_DIR`` is set, there as well.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs the Python package playwright: pip install 'fpliif[browser]'"
)

import fpliif  # noqa: E402
from fpliif.infer.cli import example_image  # noqa: E402
from fpliif.infer.parser import FaceParser  # noqa: E402
from fpliif.labels import get_label_set  # noqa: E402
from fpliif.serve import ServeSettings, create_app  # noqa: E402
from fpliif.serve.testing import background_server  # noqa: E402
from test_serve import SlowParser  # noqa: E402

TINY = {
    "name": "fpliif",
    "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    env = os.environ.get("FPLIIF_CHROMIUM")
    if env:
        return env
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium binary found (apt-get install -y chromium, or set FPLIIF_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("browser") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY), path)
    yield FaceParser.from_pretrained(path)
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def server(parser):
    with background_server(create_app(parser, ServeSettings(torch_threads=0))) as url:
        yield url


@pytest.fixture(scope="module")
def browser(chromium_path):
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        yield b
        b.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    out = os.environ.get("FPLIIF_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)
    return path


def open_page(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("body[data-state=idle]")
    return page, errors


def canvas_pixels(page, selector: str) -> np.ndarray:
    """RGBA pixels of a canvas (base64 over the wire: a JSON array of a million numbers is slow)."""
    data = page.evaluate(
        """(sel) => {
            const c = document.querySelector(sel);
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let s = "";
            for (let i = 0; i < px.length; i += 0x8000) s += String.fromCharCode(...px.subarray(i, i + 0x8000));
            return {w: c.width, h: c.height, b64: btoa(s)};
        }""",
        selector,
    )
    return np.frombuffer(base64.b64decode(data["b64"]), np.uint8).reshape(data["h"], data["w"], 4)


def renders(page) -> int:
    # (waits use attribute selectors: the page's CSP forbids the eval behind wait_for_function)
    return int(page.get_attribute("#overlay", "data-renders"))


def upload(page, path) -> None:
    page.set_input_files("#file", str(path))
    page.wait_for_selector("body[data-state=ready]")


def test_page_desktop(browser, server, parser, tmp_path):
    page, errors = open_page(browser, server, 1280, 800)
    model = page.evaluate("fetch('v1/model').then(r => r.json())")
    # legend: names and colours from GET /v1/model
    items = page.eval_on_selector_all(
        "#legend li",
        "lis => lis.map(li => [li.querySelector('.name').title, getComputedStyle(li.querySelector('.swatch'))"
        ".backgroundColor])",
    )
    assert [n for n, _ in items] == model["classes"][1:]
    assert [c for _, c in items] == [f"rgb({r}, {g}, {b})" for r, g, b in model["colors"][1:]]

    upload(page, example_image())
    assert "1 face" in page.inner_text("#summary")
    expected = parser(Image.open(example_image())).labels
    original = canvas_pixels(page, "#original")
    overlay = canvas_pixels(page, "#overlay")
    assert original.shape[:2] == overlay.shape[:2] == expected.shape
    # the most frequent non-background class is coloured; switch it off
    counts = np.bincount(expected.ravel(), minlength=19)
    k = int(np.argmax(counts[1:]) + 1)
    name = model["classes"][k]
    assert counts[k] > 0
    box = page.locator(f"#legend input[data-class='{name}']")
    before = renders(page)
    box.uncheck()
    page.wait_for_selector(f"#overlay[data-renders='{before + 1}']")
    off = canvas_pixels(page, "#overlay")
    changed = np.any(off != overlay, axis=-1)
    assert 0 < changed.sum() <= counts[k]
    assert not changed[expected != k].any()  # only that class's pixels changed
    # with the class off, its pixels show the original photo
    inside = (expected == k) & changed
    np.testing.assert_array_equal(off[inside][:, :3], original[inside][:, :3])
    box.check()
    page.wait_for_selector(f"#overlay[data-renders='{before + 2}']")
    np.testing.assert_array_equal(canvas_pixels(page, "#overlay"), overlay)
    screenshot(page, tmp_path, "page_desktop")

    # the label PNG download is the server's index PNG of the same photo
    with page.expect_download() as dl:
        page.click("#download-labels")
    target = tmp_path / "labels.png"
    dl.value.save_as(target)
    pil = Image.open(target)
    assert dl.value.suggested_filename == "astronaut_labels.png" and pil.mode == "P"
    np.testing.assert_array_equal(np.asarray(pil), expected)

    # aligned mode at a chosen output resolution
    page.check("input[name=mode][value=aligned]")
    page.select_option("#size", "128")
    page.wait_for_selector("body[data-state=ready] #overlay[width='128']")
    assert "128×128" in page.inner_text("#summary")
    assert page.evaluate("document.querySelector('#original').height") == 128

    # a multi-frame upload: the page shows the service's note that only the first frame is parsed
    gif = tmp_path / "two.gif"
    frame = Image.open(example_image()).convert("RGB").resize((96, 96))
    frame.save(gif, save_all=True, append_images=[frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    page.set_input_files("#file", str(gif))
    page.wait_for_selector("#status:has-text('frames')")
    assert "Note: 2 frames (GIF); the first is parsed." in page.inner_text("#status")

    # a bad file: the server's message is shown, nothing breaks
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("body[data-state=error]")
    assert "not a supported image" in page.inner_text("#status") or "unsupported" in page.inner_text("#status")
    assert errors == [] or all("415" in e for e in errors), errors


def test_page_label_sets(browser, server, parser):
    """The page's Labels control asks for another label set; the legend and the colours follow the answer, and
    the label PNG download is the server's PNG in that set."""
    page, errors = open_page(browser, server, 1280, 800)
    assert page.eval_on_selector_all("#label-set option", "os => os.map(o => o.value)")[0] == "celebamask-hq"
    upload(page, example_image())
    before = renders(page)
    page.select_option("#label-set", "coarse")
    page.wait_for_selector(f"body[data-state=ready] #overlay:not([data-renders='{before}'])")
    coarse = get_label_set("coarse")
    names = page.eval_on_selector_all("#legend li .name", "ns => ns.map(n => n.title)")
    assert names == list(coarse.classes[1:])
    expected = parser(Image.open(example_image())).remap("coarse").labels
    overlay, original = canvas_pixels(page, "#overlay"), canvas_pixels(page, "#original")
    k = int(np.argmax(np.bincount(expected.ravel(), minlength=len(coarse.classes))[1:]) + 1)  # the largest class
    inside = expected == k
    assert inside.any()
    tint = np.array(coarse.colors[k], float)
    moved = overlay[inside][:, :3].astype(float) - original[inside][:, :3]  # towards that class's coarse colour
    assert (moved * (tint - original[inside][:, :3])).sum(axis=1).mean() > 0
    assert errors == []


def test_page_phone(browser, server, tmp_path):
    page, errors = open_page(browser, server, 390, 844)
    upload(page, example_image())
    # nothing wider than the phone's viewport; the two views stack (parsing first) and fill the width
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    orig = page.locator("#original").bounding_box()
    over = page.locator("#overlay").bounding_box()
    assert orig["y"] > over["y"] + over["height"] - 1 and over["width"] > 300
    for sel in ("#drop", "#size", "#download-labels", "#legend"):
        b = page.locator(sel).bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390, sel
    assert errors == []
    path = screenshot(page, tmp_path, "page_phone")
    assert Image.open(io.BytesIO(path.read_bytes())).size[0] == 390


def test_api_docs_render_offline(browser, server):
    """``/docs`` loads Swagger UI from the package (this machine has no internet, like many servers)."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(server + "docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/parse']")
    loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert failed == [] and loaded and all(u.startswith(server) or u.startswith("data:") for u in loaded), loaded


def noise_png(path: Path, side: int, alpha: bool = False) -> Path:
    rng = np.random.default_rng(side)
    arr = rng.integers(0, 256, (side, side, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        arr[:, : side // 2, 3] = 0  # the left half transparent
        arr[:, side // 2 :, 3] = 255
    Image.fromarray(arr).save(path)
    return path


def test_page_shows_only_answers_to_its_current_settings(browser, parser, tmp_path):
    """Sizes over the work budget are not offered (TTA doubles it); a failed request clears the result shown; a
    file refused by size is not followed by the answer to the file chosen before it; transparency as on the server."""
    settings = ServeSettings(torch_threads=0, max_upload_mb=0.25, max_points=20_000)
    with background_server(create_app(SlowParser(parser, 1.5), settings)) as url:
        page, errors = open_page(browser, url, 1280, 800)
        page.check("input[name=mode][value=aligned]")
        offered = page.eval_on_selector_all("#size option", "os => os.map(o => o.value)")
        assert "128" in offered and "256" not in offered  # 128² = 16,384 queries fit, 256² do not
        page.check("#tta")
        assert "128" not in page.eval_on_selector_all("#size option", "os => os.map(o => o.value)")
        page.uncheck("#tta")
        page.select_option("#size", "128")

        upload(page, noise_png(tmp_path / "crop.png", 160))  # 160 x 160 "as uploaded" would need 25,600
        assert page.is_visible("#pair")
        page.select_option("#size", "")
        page.wait_for_selector("body[data-state=error]")
        assert "over_budget" in page.inner_text("#status") or "queries" in page.inner_text("#status")
        assert not page.is_visible("#pair") and page.get_attribute("#status", "role") == "alert"

        page.select_option("#size", "128")
        page.wait_for_selector("body[data-state=ready]")
        page.set_input_files("#file", str(noise_png(tmp_path / "a.png", 64)))  # answered after 1.5 s ...
        page.set_input_files("#file", str(noise_png(tmp_path / "big.png", 400)))  # ... but this one is refused
        page.wait_for_selector("body[data-state=error]")
        page.wait_for_timeout(2500)
        assert page.get_attribute("body", "data-state") == "error" and not page.is_visible("#pair")
        assert "big.png" in page.inner_text("#status")

        upload(page, noise_png(tmp_path / "alpha.png", 64, alpha=True))
        original = canvas_pixels(page, "#original")
        assert (original[:, :28, :3] == 255).all()  # transparent pixels shown over white, as the server parsed them
        assert errors == [] or all("413" in e or "422" in e for e in errors), errors
