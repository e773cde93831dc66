"""`aevb explore` in a real browser on a trained run: the server time of each kind of request
(the Server-Timing header: from a request's arrival to its response's start) while a
scripted user moves sliders, drags on the map, scrubs an interpolation, draws and samples;
optionally the screenshot of README.md (docs/explore.png).

    python benchmarks/explore.py RUN [--data-dir DIR] [--rounds 60] [--screenshot docs/explore.png]

Needs the explore extra, Playwright's Python package and Debian's chromium (no browser
download). A MNIST run for it (about a minute on 2 cores):
    aevb train --dataset mnist-offline --data-dir ../shared/data/mnist --latent 8 --epochs 20 --out runs/mnist8
"""
import argparse
import io
import re
import shutil
import subprocess
import sys
from collections import defaultdict

import numpy as np

import result_files


def start(run: str, data_dir: str | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "aevb", "explore", run, "--port", "0", "--no-browser"]
    proc = subprocess.Popen(cmd + (["--data-dir", data_dir] if data_dir else []),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="")
        m = re.search(r"at (http://\S+/)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit(f"aevb explore exited with status {proc.wait()}")


def drive(page, rounds: int) -> None:
    """What a user does, `rounds` times each: slider clicks, map drag steps, scrub steps."""
    rng = np.random.default_rng(0)
    sliders = page.locator("#sliders input").all()
    for i in range(rounds):
        b = sliders[i % len(sliders)].bounding_box()
        page.mouse.click(b["x"] + rng.uniform(0.05, 0.95) * b["width"], b["y"] + b["height"] / 2)
        page.wait_for_timeout(15)
    m = page.locator("#map").bounding_box()
    page.mouse.move(m["x"] + 0.3 * m["width"], m["y"] + 0.3 * m["height"])
    page.mouse.down()
    for i in range(rounds):
        a = 2 * np.pi * i / rounds
        page.mouse.move(m["x"] + (0.5 + 0.3 * np.cos(a)) * m["width"], m["y"] + (0.5 + 0.3 * np.sin(a)) * m["height"])
        page.wait_for_timeout(15)
    page.mouse.up()
    g = page.locator("#gallery").bounding_box()
    cell = g["width"] / 12
    page.mouse.click(g["x"] + 2.5 * cell, g["y"] + cell / 2)
    page.mouse.click(g["x"] + 7.5 * cell, g["y"] + 2.5 * cell)
    t = page.locator("#t").bounding_box()
    for i in range(rounds):
        page.mouse.click(t["x"] + 4 + (t["width"] - 8) * i / (rounds - 1), t["y"] + t["height"] / 2)
        page.wait_for_timeout(15)
    draw_four(page)
    for _ in range(5):
        page.click("#resample")
        page.wait_for_timeout(100)


def draw_four(page) -> None:
    """A '4' on the drawing pad, in two strokes."""
    p = page.locator("#pad").bounding_box()
    for stroke in ([(0.35, 0.15), (0.25, 0.55), (0.7, 0.55)], [(0.6, 0.2), (0.6, 0.85)]):
        page.mouse.move(p["x"] + stroke[0][0] * p["width"], p["y"] + stroke[0][1] * p["height"])
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for s in np.linspace(0, 1, 8)[1:]:
                page.mouse.move(p["x"] + (x0 + s * (x1 - x0)) * p["width"], p["y"] + (y0 + s * (y1 - y0)) * p["height"])
        page.mouse.up()
    page.wait_for_timeout(500)


def screenshot(page, path: str) -> None:
    """The whole page as a 256-colour PNG (small enough for the repository), which names
    this script in a text chunk (result_files: a later run may replace it)."""
    from PIL import Image, PngImagePlugin
    page.evaluate("window.scrollTo(0, 0)")
    img = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "python benchmarks/explore.py")
    buf = io.BytesIO()
    img.quantize(256, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True, pnginfo=info)
    result_files.write(path, buf.getvalue(), "explore.py")
    print(f"screenshot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args()
    if args.screenshot:
        result_files.check(args.screenshot, "explore.py")
    from playwright.sync_api import sync_playwright
    proc, url = start(args.run, args.data_dir)
    times = defaultdict(list)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 1040})
            page.on("response", lambda r: "/api/" in r.url and times[r.url.split("/api/")[1]].append(
                float(r.headers["server-timing"].split("dur=")[1])))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=60000)
            drive(page, args.rounds)
            if args.screenshot:
                screenshot(page, args.screenshot)
            browser.close()
    finally:
        proc.terminate()
        proc.wait()
    for path, t in sorted(times.items()):
        print(f"/api/{path:12s} n={len(t):4d}  median {np.median(t):7.2f} ms  p90 {np.percentile(t, 90):7.2f} ms")


if __name__ == "__main__":
    main()
