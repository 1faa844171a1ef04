"""`dinodiff report` in a real browser, checked against independent references.

The dumps: an input prepared by `dinodiff prep` from a PNG made here with PIL (64 x 64, a 4 x 4
patch grid); a synthetic ViT-S/16-shaped reference on it (`dinodiff synth --input`); a "port"
written by tools/dumpfile.py (numpy + the stock safetensors layout, not dinodiff's writer) with a
fault placed by hand: from `blocks.5.ls2` on, the patch tokens of grid column 2 are off by
1e-3 · (row + 1); and an "export" of the port that adds rounding-sized noise.

Headless Chromium (tests/python/chromium.py) loads each page: no console error, no exception,
no request leaving file:/data:, one heatmap cell per compared stage, the CSS metric switch works,
and the screenshot is not blank. numpy, PIL and safetensors give the expected patch map, token
breakdown and input image. Screenshots go to $DINODIFF_SCREENSHOT_DIR when it is set."""

import base64
import io
import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools"))
import chromium  # noqa: E402
from dumpfile import read_dump, write_dump  # noqa: E402

SIZE, PATCH, R = 64, 16, 4
GRID = SIZE // PATCH
FAULT_FROM = "blocks.5.ls2"
FAULT_COLUMN = 2


def picture():
    img = Image.new("RGB", (SIZE, SIZE))
    px = img.load()
    for y in range(SIZE):
        for x in range(SIZE):
            px[x, y] = (4 * x, 4 * y, 255 - 2 * (x + y))
    d = ImageDraw.Draw(img)
    d.ellipse((8, 8, 40, 40), fill=(250, 220, 30))
    d.rectangle((44, 36, 60, 60), fill=(20, 20, 20))
    return img


def execution_index(order, name):
    return order.index(name)


def patch_rows(array):
    """The patch tokens of a [1, N, X] array (N = 1 + R + GRID²), else None."""
    if array.ndim == 3 and array.shape[:2] == (1, 1 + R + GRID * GRID):
        return array[0, 1 + R:]
    return None


@pytest.fixture(scope="module")
def pages(tmp_path_factory, dinodiff_bin):
    import subprocess
    d = tmp_path_factory.mktemp("html")

    def dd(*args, code=(0,)):
        p = subprocess.run([str(dinodiff_bin), *map(str, args)], capture_output=True, text=True)
        assert p.returncode in code, p.stderr
        return p

    picture().save(d / "picture.png")
    dd("prep", "--image", d / "picture.png", "--transform", "none", "-o", d / "in.st")
    dd("synth", "--variant", "vits16", "--image-size", SIZE, "--input", d / "in.st", "--seed", 1,
       "-o", d / "a.st")
    m, t = read_dump(d / "a.st")
    order = m["order"]
    start = execution_index(order, FAULT_FROM)
    port, export = [], []
    noise = np.random.default_rng(5)
    for i, name in enumerate(order):
        x = t[name]
        y = x.copy()
        rows = patch_rows(y)
        if i >= start and rows is not None:
            for r in range(GRID):
                rows[r * GRID + FAULT_COLUMN] += np.float32(1e-3 * (r + 1))
        record = m["tensors"][name]
        port.append((name, y, record))
        z = y if name == "input" else (
            y + noise.uniform(-1e-7, 1e-7, y.shape).astype(np.float32))
        export.append((name, z, record))
    write_dump(d / "b.st", port, source="eqx", variant="vits16", input_provenance=m["input"])
    write_dump(d / "c.st", export, source="onnx", variant="vits16", input_provenance=m["input"])
    dd("report", d / "a.st", d / "b.st", "-o", d / "diff.html", code=(1,))
    dd("report", d / "a.st", d / "b.st", d / "c.st", "-o", d / "triangle.html", code=(1,))
    return d


@pytest.fixture(scope="module")
def browser():
    b = chromium.Chromium(chromium.require())
    yield b
    b.close()


def canonical_pairs(run, d, *dumps):
    r = json.loads(run("diff", *[d / x for x in dumps], "--format", "json", expect=(1,)).stdout)
    sides = [s["report"] for s in r["sides"]] if "sides" in r else [r]
    return [sum(p["canonical"] for p in s["pairs"]) for s in sides]


def screenshot_dir(tmp):
    where = os.environ.get("DINODIFF_SCREENSHOT_DIR")
    if where:
        pathlib.Path(where).mkdir(parents=True, exist_ok=True)
        return pathlib.Path(where)
    return tmp


@pytest.mark.parametrize("page,dumps", [("diff.html", ("a.st", "b.st")),
                                        ("triangle.html", ("a.st", "b.st", "c.st"))])
def test_the_page_loads_cleanly_and_shows_every_stage(pages, browser, run, page, dumps,
                                                       tmp_path):
    problems = browser.load((pages / page).as_uri())
    assert problems == [], problems
    cells = browser.evaluate(
        "[...document.querySelectorAll('svg.heatmap')].map(s => s.querySelectorAll('g.cell').length)")
    assert cells == canonical_pairs(run, pages, *dumps)
    shot = browser.screenshot(screenshot_dir(tmp_path) / f"report-synthetic-{page}.png")
    std, not_background = chromium.pixel_spread(shot)
    assert std > 10 and not_background > 0.05, (std, not_background)


def test_the_metric_switch_recolours_the_heatmap(pages, browser):
    assert browser.load((pages / "diff.html").as_uri()) == []
    fill = ("(() => { const r = document.querySelector('g.cell.over rect.c'); "
            "const s = getComputedStyle(r); return [s.fill, s.getPropertyValue('--max').trim(), "
            "s.getPropertyValue('--rms').trim()]; })()")
    shown, want_max, want_rms = browser.evaluate(fill)
    assert want_max != want_rms

    def rgb(hex_colour):
        h = hex_colour.lstrip("#")
        return f"rgb({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)})"

    assert shown == rgb(want_max)
    browser.evaluate("document.getElementById('metric-0-rms').click()")
    assert browser.evaluate(fill)[0] == rgb(want_rms)
    visible = browser.evaluate(
        "[...document.querySelectorAll('g.cell.over text.v')].filter(t => "
        "getComputedStyle(t).display !== 'none').map(t => t.classList[1])")
    assert set(visible) == {"rms"}


def data_uris(html, css_class):
    return [base64.b64decode(u) for u in re.findall(
        rf'<image class="{css_class}" href="data:image/png;base64,([^"]+)"', html)]


def test_the_input_image_is_the_prepared_picture(pages):
    """prep normalized the PNG with ImageNet mean/std; the report un-normalizes with the mean/std
    the manifest records: PIL's pixels come back within rounding."""
    html = (pages / "diff.html").read_text()
    [png] = data_uris(html, "input")
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    original = np.asarray(picture(), dtype=np.int16)
    assert shown.shape == original.shape
    assert np.abs(shown - original).max() <= 1


def test_the_patch_map_is_numpys(pages):
    """The default stage is the first over tolerance with a token axis; its per-patch max|Δ|,
    computed here with numpy, puts the worst patch at the bottom of column 2."""
    _, a = read_dump(pages / "a.st")
    _, b = read_dump(pages / "b.st")
    html = (pages / "diff.html").read_text()
    assert f"per-patch max|Δ| at <code>{FAULT_FROM}</code> (the first stage over tolerance" in html
    delta = np.abs(patch_rows(a[FAULT_FROM]).astype(np.float64)
                   - patch_rows(b[FAULT_FROM]).astype(np.float64)).max(axis=1)
    worst = int(delta.argmax())
    assert divmod(worst, GRID) == (GRID - 1, FAULT_COLUMN)
    m = re.search(r"worst patch: row (\d+), column (\d+), max\|Δ\| ([0-9.e+-]+)", html)
    assert (int(m[1]), int(m[2])) == divmod(worst, GRID)
    assert float(m[3]) == pytest.approx(delta[worst], rel=1e-3)
    # The heat image over the input: one pixel per patch, transparent where nothing differs.
    [over] = data_uris(html, "heat over")
    heat = np.asarray(Image.open(io.BytesIO(over)).convert("RGBA"))
    assert heat.shape == (GRID, GRID, 4)
    assert ((heat[..., 3] > 0) == (delta.reshape(GRID, GRID) > 0)).all()


def test_the_token_breakdown_is_numpys(pages):
    _, a = read_dump(pages / "a.st")
    _, b = read_dump(pages / "b.st")
    html = (pages / "diff.html").read_text()
    for stage in ["blocks.5.output", "blocks.11.mlp.hidden", "norm"]:
        row = re.search(rf"<tr><td><code>{re.escape(stage)}</code></td>(.*?)</tr>", html)[1]
        shown = [float(v) for v in re.findall(r">([0-9.e+-]+)</td>", row)]
        d = np.abs(a[stage].astype(np.float64) - b[stage].astype(np.float64))[0]
        parts = [d[:1], d[1:1 + R], d[1 + R:]]
        want = [f(p) for p in parts for f in (np.max, lambda p: np.sqrt(np.mean(p ** 2)))]
        assert shown == pytest.approx(want, rel=6e-3, abs=1e-12), stage
