"""`aevb explore` end to end in a real headless browser: Debian's chromium driven by
Playwright (its Python package, with `executable_path`: no browser download). A tiny model
is trained on the embedded digits, `aevb explore RUN --port 0 --no-browser` runs as a
subprocess, and the page is used as a person would: move a slider, drag on the map, draw a
stroke, pick two images and scrub between them, sample. Skipped, saying why, only where
Playwright or chromium is missing (.ci/run installs both)."""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from aevb import cli

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="needs Playwright's Python package: pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("needs Debian's chromium (apt-get install -y chromium)", allow_module_level=True)
pytest.importorskip("uvicorn", reason="needs the explore extra: pip install -e '.[explore]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of `aevb explore` serving a digits run, in a subprocess."""
    out = tmp_path_factory.mktemp("explore-e2e") / "digits"
    assert cli.main(["train", "--dataset", "digits", "--latent", "4", "--hidden", "64", "--epochs", "12",
                     "--lr", "3e-3", "--batch-size", "50", "--out", str(out), "--no-progress",
                     "--no-figures"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "aevb", "explore", str(out), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen = []
    try:
        while True:
            seen.append(lines.get(timeout=120))
            m = re.search(r"serving \S+ at (http://127\.0\.0\.1:\d+/)", seen[-1])
            if m:
                break
        yield m.group(1)
    except queue.Empty:
        pytest.fail(f"aevb explore did not start: {''.join(seen)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    """The loaded page; `page.log` holds every request's URL, every /api response's server
    time (ms) and every console error or uncaught exception."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        pg.log = {"requests": [], "times": [], "errors": []}
        pg.on("request", lambda r: pg.log["requests"].append(r.url))
        pg.on("response", lambda r: "/api/" in r.url and pg.log["times"].append(
            (r.url.split("/api/")[1], float(r.headers["server-timing"].split("dur=")[1]))))
        pg.on("console", lambda m: m.type == "error" and pg.log["errors"].append(m.text))
        pg.on("pageerror", lambda e: pg.log["errors"].append(str(e)))
        pg.goto(server)
        pg.wait_for_selector("body[data-ready='1']", timeout=30000)
        yield pg
        browser.close()


def changed(page, selector: str, old: str) -> str:
    """Wait until the image `selector` shows something other than `old`; its new src."""
    page.wait_for_function("([s, old]) => document.querySelector(s).src !== old", arg=[selector, old],
                           timeout=10000)
    return page.eval_on_selector(selector, "e => e.src")


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def test_the_page_loads_everything_from_the_server(page, server):
    assert page.inner_text("#run") == "digits"
    page.wait_for_function(  # the first decode is a request of its own: wait for it, not a race
        "() => document.querySelector('#decoded').src.startsWith('data:image/png;base64,')", timeout=20000)
    assert page.eval_on_selector("#decoded", "e => e.src").startswith("data:image/png;base64,")
    assert page.locator("#sliders input").count() == 4
    page.wait_for_function("() => document.querySelectorAll('#samples img').length === 8", timeout=20000)
    assert len(page.locator("#samples img").all()) == 8
    assert all(url.startswith(server) or url.startswith("data:") for url in page.log["requests"])
    assert "PCA" in page.inner_text("#map-describe")
    assert page.log["errors"] == []


def test_moving_a_slider_decodes_a_new_image(page):
    before, z_before = page.eval_on_selector("#decoded", "e => e.src"), page.evaluate("state.z.slice()")
    b = box(page, "#sliders input")
    with page.expect_response(lambda r: r.url.endswith("/api/decode")):
        page.mouse.click(b["x"] + 0.9 * b["width"], b["y"] + b["height"] / 2)
    changed(page, "#decoded", before)
    first = int(page.get_attribute("#sliders input", "data-dim"))
    z = page.evaluate("state.z.slice()")
    assert z[first] > z_before[first] + 1                 # the most active dimension, moved right
    assert [a for i, a in enumerate(z) if i != first] == pytest.approx(
        [a for i, a in enumerate(z_before) if i != first], abs=1e-4)


def test_dragging_on_the_map_decodes_the_point_under_the_pointer(page):
    before = page.eval_on_selector("#decoded", "e => e.src")
    m = box(page, "#map")
    sent = []
    page.on("request", lambda r: r.url.endswith("/api/map") and sent.append(r.post_data_json["point"]))
    page.mouse.move(m["x"] + 0.2 * m["width"], m["y"] + 0.3 * m["height"])
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(m["x"] + (0.2 + 0.05 * k) * m["width"], m["y"] + (0.3 + 0.03 * k) * m["height"])
        page.wait_for_timeout(30)
    with page.expect_response(lambda r: r.url.endswith("/api/map")):
        page.mouse.move(m["x"] + 0.75 * m["width"], m["y"] + 0.65 * m["height"])
    page.mouse.up()
    changed(page, "#decoded", before)
    page.wait_for_timeout(300)
    assert len(sent) >= 2
    x0, x1, y0, y1 = page.evaluate("state.info.map.extent")
    assert sent[-1] == pytest.approx([x0 + 0.75 * (x1 - x0), y1 - 0.65 * (y1 - y0)], abs=0.01 * (x1 - x0))
    assert page.evaluate("state.marker") == pytest.approx(sent[-1], abs=1e-3)


def test_drawing_a_stroke_shows_its_reconstruction_place_and_anomaly_score(page):
    p = box(page, "#pad")
    with page.expect_response(lambda r: r.url.endswith("/api/encode")):
        page.mouse.move(p["x"] + 0.5 * p["width"], p["y"] + 0.15 * p["height"])
        page.mouse.down()
        for k in range(1, 9):
            page.mouse.move(p["x"] + (0.5 - 0.02 * k) * p["width"], p["y"] + (0.15 + 0.09 * k) * p["height"])
        page.mouse.up()
    page.wait_for_function("document.getElementById('score').textContent.includes('nats')", timeout=10000)
    assert page.eval_on_selector("#recon", "e => e.src").startswith("data:image/png")
    assert re.search(r"anomaly score [\d.]+ nats .* higher than \d+% of \d+ test images", page.inner_text("#score"))
    assert page.evaluate("state.drawn") is not None


def test_interpolating_between_two_test_images_and_sampling(page):
    g = box(page, "#gallery")
    cell = g["width"] / 12
    page.mouse.click(g["x"] + cell / 2, g["y"] + cell / 2)
    with page.expect_response(lambda r: r.url.endswith("/api/interpolate")):
        page.mouse.click(g["x"] + 5.5 * cell, g["y"] + 1.5 * cell)
    assert page.inner_text("#pick").startswith("A: #0") and "B: #17" in page.inner_text("#pick")
    first = changed(page, "#interp", "")
    t = box(page, "#t")
    with page.expect_response(lambda r: r.url.endswith("/api/interpolate")):
        page.mouse.click(t["x"] + t["width"] - 4, t["y"] + t["height"] / 2)
    changed(page, "#interp", first)
    before = page.eval_on_selector("#samples img", "e => e.src")
    with page.expect_response(lambda r: r.url.endswith("/api/sample")):
        page.click("#resample")
    page.wait_for_function("old => document.querySelector('#samples img').src !== old", arg=before)


def test_server_time_per_request_in_the_browser(page, capsys):
    """Runs last: the server times (Server-Timing) of every decoding request the page made."""
    page.wait_for_timeout(300)
    times = page.log["times"]
    decoding = [ms for path, ms in times if path in ("decode", "map", "interpolate")]
    assert len(decoding) >= 5
    med, p90 = np.median(decoding), np.percentile(decoding, 90)
    with capsys.disabled():
        print(f"\n  browser e2e, digits model: {len(decoding)} decoding requests, server time median "
              f"{med:.2f} ms, p90 {p90:.2f} ms; all requests: {len(times)}", end="")
    assert med < 50
    assert "median" in page.inner_text("#timings")
    assert page.log["errors"] == []
