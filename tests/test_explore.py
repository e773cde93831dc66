"""`aevb explore`: the server's answers checked against the model itself, every kind of bad
request answered with a 4xx and a JSON message, and decoding times for MNIST-sized models.
(The page in a real browser: tests/test_explore_browser.py.)"""
from __future__ import annotations

import base64
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette", reason="needs the explore extra: pip install -e '.[explore]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the test extra)")
with warnings.catch_warnings():  # newer Starlette prefers 'httpx2' and warns about httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from aevb import VAE, anomaly, cli  # noqa: E402
from aevb.explore import images, validation  # noqa: E402
from aevb.explore.adapter import RunData, load_run  # noqa: E402
from aevb.explore.explorer import MAX_SLIDERS, Explorer  # noqa: E402
from aevb.explore.server import create_app  # noqa: E402


def train(out, *flags) -> str:
    assert cli.main(["train", "--dataset", "digits", "--hidden", "32", "--no-progress",
                     "--no-figures", "--out", str(out), *map(str, flags)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("explore")
    return {"vae": train(d / "vae", "--latent", 4, "--epochs", 2),
            "plane": train(d / "plane", "--latent", 2, "--epochs", 1),
            "cvae": train(d / "cvae", "--latent", 3, "--epochs", 1, "--conditional"),
            "ae": train(d / "ae", "--latent", 3, "--epochs", 1, "--model", "autoencoder"),
            "binary": train(d / "binary", "--latent", 6, "--epochs", 1, "--latent-family", "bernoulli")}


@pytest.fixture(scope="module")
def explorers(runs):
    return {k: Explorer(load_run(runs[k])) for k in ("vae", "plane", "cvae", "ae")}


def client(ex, **kw) -> TestClient:
    return TestClient(create_app(ex, **kw), base_url="http://127.0.0.1")


def pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def png_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    kind = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp"}[fmt]
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode()


def as_png(x: torch.Tensor) -> np.ndarray:
    """What the server's PNG of an image (C, H, W) in [0, 1] must hold."""
    a = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


# ----------------------------------------------------------------------------- answers
def test_decode_returns_the_decoder_mean_of_the_vector_sent(explorers):
    ex = explorers["vae"]
    z = [0.3, -1.2, 2.0, 0.5]
    res = client(ex).post("/api/decode", json={"z": z})
    assert res.status_code == 200
    assert res.headers["server-timing"].startswith("app;dur=")
    with torch.no_grad():
        want = ex.model.decode(torch.tensor([z])).mean[0]
    assert np.abs(pixels(res.json()["image"]).astype(int) - as_png(want).astype(int)).max() <= 1
    assert res.json()["z"] == pytest.approx(z)


def test_a_map_point_decodes_through_the_pca_inverse_and_back(explorers):
    ex = explorers["vae"]
    assert ex.map.kind == "pca"
    x0, x1, y0, y1 = ex.map.extent
    uv = [0.3 * x0 + 0.7 * x1, 0.6 * y0 + 0.4 * y1]
    res = client(ex).post("/api/map", json={"point": uv}).json()
    pca = ex.map.pca
    z = pca.mean_ + uv[0] * pca.components_[0] + uv[1] * pca.components_[1]
    assert res["z"] == pytest.approx(z.tolist(), abs=1e-4)
    assert res["map"] == pytest.approx(uv, abs=1e-3)   # a point of the plane maps back to itself
    # the background is the plane decoded: one image per cell, as /api/map decodes the centres
    grid = ex.background()
    n = grid.shape[-1] // ex.shape[-1]
    centre = (x0 + 0.5 * (x1 - x0) / n, y1 - 0.5 * (y1 - y0) / n)
    top_left = client(ex).post("/api/map", json={"point": list(centre)}).json()["image"]
    assert np.abs(pixels(top_left).astype(int) - as_png(grid[:, :8, :8]).astype(int)).max() <= 1


def test_a_two_dimensional_latent_is_its_own_map(explorers):
    ex = explorers["plane"]
    assert ex.map.kind == "latent"
    assert ex.map.extent[0] <= -3 and ex.map.extent[1] >= 3       # a N(0, I) prior's plane
    res = client(ex).post("/api/map", json={"point": [0.5, -1.25]}).json()
    assert res["z"] == pytest.approx([0.5, -1.25])
    np.testing.assert_allclose(ex.map.coords, ex.codes.numpy(), atol=1e-6)


def test_tsne_map_decodes_the_nearest_test_code(runs):
    ex = Explorer(load_run(runs["vae"]), map_kind="tsne", n_map=150)
    assert ex.map.kind == "tsne" and not ex.map.plane and ex.background() is None
    i = 17
    res = client(ex).post("/api/map", json={"point": ex.map.coords[i].tolist()}).json()
    assert res["z"] == pytest.approx(ex.codes[i].tolist(), abs=1e-4)
    assert "nearest" in client(ex).get("/api/info").json()["map"]["describe"]


def test_interpolation_runs_from_one_test_code_to_the_other(explorers):
    ex = explorers["vae"]
    c = client(ex)
    za, zb = ex.codes[ex.gallery[2]], ex.codes[ex.gallery[5]]
    for t in (0.0, 0.25, 1.0):
        res = c.post("/api/interpolate", json={"a": 2, "b": 5, "t": t}).json()
        assert res["z"] == pytest.approx(((1 - t) * za + t * zb).tolist(), abs=1e-4)


def test_sliders_are_the_most_active_dimensions_first(runs):
    run = load_run(runs["vae"])
    torch.manual_seed(1)
    big = VAE.mlp((1, 8, 8), latent_dim=40, hidden=(16,)).eval()
    ex = Explorer(RunData("big", big, run.x, run.y, True, "standard_normal"), n_reference=10)
    info = client(ex).get("/api/info").json()
    dims = [s["dim"] for s in info["sliders"]]
    assert len(dims) == MAX_SLIDERS == 32 and len(set(dims)) == 32
    variance = ex.codes.double().var(0, unbiased=False)
    assert [s["variance"] for s in info["sliders"]] == pytest.approx(
        variance.sort(descending=True).values[:32].tolist(), abs=1e-4)
    assert all(s["range"][0] <= -3 and s["range"][1] >= 3 for s in info["sliders"])


def test_an_encoded_image_gets_its_code_reconstruction_and_importance_sampled_score(explorers):
    ex = explorers["vae"]
    x = ex.x[ex.gallery[0]]
    img = Image.fromarray(as_png(x))
    res = client(ex).post("/api/encode", json={"image": png_url(img)}).json()
    np.testing.assert_array_equal(pixels(res["input"]), as_png(x))     # 8x8 in, unchanged
    with torch.no_grad():
        z = ex.model.embed(x[None])[0]
        score = -ex.model.log_likelihood(x[None], samples=100)[0]
    assert res["z"] == pytest.approx(z.tolist(), abs=1e-4)
    assert res["score"] == pytest.approx(float(score), abs=1e-2)
    assert res["percentile"] == pytest.approx(100 * float((ex.reference < score).double().mean()), abs=0.1)
    assert (pixels(res["reconstruction"]).astype(int)
            - as_png(ex.decode(z)).astype(int)).__abs__().max() <= 1


def test_no_reference_scores_give_no_percentile_rather_than_an_error(runs):
    ex = Explorer(load_run(runs["vae"]), n_reference=0)
    res = client(ex).post("/api/encode", json={"image": png_url(Image.new("L", (8, 8), 255))})
    assert res.status_code == 200 and res.json()["percentile"] is None
    assert math.isfinite(res.json()["score"])


def test_a_conditional_model_is_scored_by_the_marginal_over_classes(explorers):
    ex = explorers["cvae"]
    x = ex.x[ex.gallery[:3]]
    want = anomaly.anomaly_scores(ex.model, x, samples=100)     # the library's own scoring
    np.testing.assert_allclose(ex.score(x).numpy(), want.double().numpy(), rtol=1e-4)
    c = client(ex)
    info = c.get("/api/info").json()
    assert info["num_classes"] == 10 and any("conditional" in n for n in info["notes"])
    z = [0.1, 0.2, -0.3]
    a = c.post("/api/decode", json={"z": z, "y": 1}).json()["image"]
    b = c.post("/api/decode", json={"z": z, "y": 7}).json()["image"]
    with torch.no_grad():
        want7 = ex.model.decode(torch.tensor([z]), torch.tensor([7])).mean[0]
    assert np.abs(pixels(b).astype(int) - as_png(want7).astype(int)).max() <= 1
    assert a != b
    assert c.post("/api/sample", json={"n": 3, "y": 4, "seed": 0}).status_code == 200


def test_temperature_scales_a_standard_normal_prior(explorers):
    ex = explorers["vae"]
    c = client(ex)
    cold = c.post("/api/sample", json={"n": 4, "temperature": 0, "seed": 3}).json()["images"]
    assert len(set(cold)) == 1                           # z = 0 * eps = 0 for every sample
    assert np.abs(pixels(cold[0]).astype(int) - as_png(ex.decode(np.zeros(4))).astype(int)).max() <= 1
    warm = c.post("/api/sample", json={"n": 4, "temperature": 1, "seed": 3}).json()["images"]
    assert len(set(warm)) == 4
    assert warm == c.post("/api/sample", json={"n": 4, "temperature": 1, "seed": 3}).json()["images"]
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(4, 4, generator=g, dtype=torch.float64)
    half = c.post("/api/sample", json={"n": 4, "temperature": 0.5, "seed": 3}).json()["images"]
    assert np.abs(pixels(half[1]).astype(int) - as_png(ex.decode((0.5 * eps[1]).numpy())).astype(int)).max() <= 1


def test_an_autoencoder_says_what_does_not_apply(explorers):
    ex = explorers["ae"]
    c = client(ex)
    info = c.get("/api/info").json()
    assert info["prior"] == "none" and "reconstruction loss" in info["score"]["kind"]
    assert any("autoencoder has no prior" in n for n in info["notes"])
    cold = c.post("/api/sample", json={"n": 2, "temperature": 0, "seed": 0}).json()["images"]
    assert np.abs(pixels(cold[0]).astype(int) - as_png(ex.decode(ex.code_mean.numpy())).astype(int)).max() <= 1
    x = ex.x[:4]
    with torch.no_grad():
        want = -ex.model.decode(ex.model.embed(x)).log_prob(x)
    np.testing.assert_allclose(ex.score(x).numpy(), want.double().numpy(), rtol=1e-5)


def test_a_conv_model_of_colour_jpegs_works_the_same_way(tmp_path, monkeypatch):
    """A folder of JPEG photos (the form of the CIFAR-10 files), a conv VAE trained on it,
    explored: colour images out, a JPEG upload in."""
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "cache"))   # the folder's decode cache
    rng = np.random.default_rng(0)
    for c in ("cats", "ships"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(30):
            a = (rng.random((40, 40, 3)) * 255 * (0.4 if c == "cats" else 1)).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "photos" / c / f"{i}.jpg")
    run = train(tmp_path / "run", "--dataset", f"folder:{tmp_path / 'photos'}", "--image-size", 32,
                "--channels", 3, "--net", "conv", "--hidden", "8,16", "--latent", 3, "--epochs", 1,
                "--binarize", "none", "--likelihood", "continuous_bernoulli")
    ex = Explorer(load_run(run))
    c = client(ex)
    info = c.get("/api/info").json()
    assert info["input_shape"] == [3, 32, 32] and info["class_names"] == ["cats", "ships"]
    n = info["gallery"]["n"]                                   # 6 test images: one row
    assert n == 6 and pixels(info["gallery"]["image"]).shape == (32, n * 32, 3)
    assert pixels(c.post("/api/decode", json={"z": [0.0] * 3}).json()["image"]).shape == (32, 32, 3)
    photo = Image.fromarray((rng.random((50, 70, 3)) * 255).astype(np.uint8))
    res = c.post("/api/encode", json={"image": png_url(photo, "JPEG")})
    assert res.status_code == 200 and pixels(res.json()["input"]).shape == (32, 32, 3)
    assert pixels(res.json()["reconstruction"]).shape == (32, 32, 3)
    assert math.isfinite(res.json()["score"]) and 0 <= res.json()["percentile"] <= 100
    assert c.post("/api/sample", json={"n": 2}).status_code == 200


def test_binary_codes_say_that_the_temperature_does_not_apply(runs):
    ex = Explorer(load_run(runs["binary"]))
    info = client(ex).get("/api/info").json()
    assert info["prior"] == "other" and any("Binary latent codes" in n for n in info["notes"])
    assert all(s["range"] == [0.0, 1.0] for s in info["sliders"])
    assert client(ex).post("/api/sample", json={"n": 3, "temperature": 2}).status_code == 200


def test_a_drawing_is_cropped_to_its_ink_centred_and_binarized_like_the_runs_images():
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))           # transparent: black
    canvas.paste((255, 255, 255, 255), (200, 20, 240, 120))         # a bar in a corner
    x = images.prepare(canvas, (1, 28, 28), fit=True, binarize=True)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    rows, cols = x[0].nonzero().T
    assert 2 <= rows.min() and rows.max() <= 25 and abs(float(cols.float().mean()) - 13.5) < 1.5
    assert abs(float(rows.float().mean()) - 13.5) < 1.5
    inverted = images.prepare(Image.new("L", (10, 10), 255), (1, 5, 5), invert=True)
    assert float(inverted.max()) == 0.0


# ----------------------------------------------------------------------------- bad requests
BAD = [  # (path, body, status, words in the message)
    ("/api/decode", {"z": [1.0]}, 400, "4 entries"),
    ("/api/decode", {"z": "0,0,0,0"}, 400, "list of 4"),
    ("/api/decode", {"z": [0, 0, 0, True]}, 400, "number"),
    ("/api/decode", {"z": [0, 0, 0, 1e6]}, 400, "in [-1000"),
    ("/api/decode", {"z": [0, 0, 0, None]}, 400, "number"),
    ("/api/decode", {}, 400, "missing field 'z'"),
    ("/api/decode", {"z": [0, 0, 0, 0], "x": 1}, 400, "unknown field 'x'"),
    ("/api/decode", {"z": [0, 0, 0, 0], "y": 3}, 400, "not conditional"),
    ("/api/decode", [0, 0, 0, 0], 400, "JSON object"),
    ("/api/map", {"point": [0.0]}, 400, "2 entries"),
    ("/api/map", {"point": [1e5, 0.0]}, 400, "point[0] must be in"),
    ("/api/interpolate", {"a": 0, "b": 99, "t": 0.5}, 400, "b must be in 0..47"),
    ("/api/interpolate", {"a": 0.0, "b": 1, "t": 0.5}, 400, "a must be an integer"),
    ("/api/interpolate", {"a": 0, "b": 1, "t": 1.5}, 400, "t must be in [0, 1]"),
    ("/api/sample", {"n": 0}, 400, "n must be in 1..64"),
    ("/api/sample", {"n": 100000}, 400, "n must be in 1..64"),
    ("/api/sample", {"temperature": -1}, 400, "temperature"),
    ("/api/sample", {"seed": "x"}, 400, "seed must be an integer"),
    ("/api/encode", {"image": 5}, 400, "data URL"),
    ("/api/encode", {"image": "http://example.com/x.png"}, 400, "data URL of a PNG or JPEG"),
    ("/api/encode", {"image": "data:image/png;base64,@@@"}, 400, "invalid base64"),
    ("/api/encode", {"image": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, 400,
     "not a readable PNG or JPEG"),
    ("/api/encode", {"image": png_url(Image.new("L", (4, 4)), "GIF").replace("gif", "png")}, 400,
     "not a readable PNG or JPEG"),                            # a GIF under a PNG's name
    ("/api/encode", {"image": png_url(Image.new("1", (5000, 5000)))}, 413, "pixels"),
    ("/api/encode", {"image": png_url(Image.new("L", (8, 8))), "fit": "yes"}, 400, "true or false"),
]


@pytest.mark.parametrize("path,body,status,words", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_with_a_message(explorers, path, body, status, words):
    res = client(explorers["vae"]).post(path, json=body)
    assert res.status_code == status, res.text
    assert words in res.json()["error"]


@pytest.mark.parametrize("raw", [b'{"z": [NaN, 0, 0, 0]}', b'{"z": [Infinity, 0, 0, 0]}',
                                 b'{"z": [1e999, 0, 0, 0]}', b'{"z": [0, 0', b"\xff\xfe", b"[" * 100000])
def test_non_finite_numbers_and_broken_json_are_refused(explorers, raw):
    res = client(explorers["vae"]).post("/api/decode", content=raw,
                                        headers={"content-type": "application/json"})
    assert res.status_code == 400
    assert "finite" in res.json()["error"] or "not valid JSON" in res.json()["error"]


def test_a_truncated_png_is_refused():
    good = png_url(Image.fromarray((np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)))
    raw = base64.b64decode(good.split(",")[1])
    url = "data:image/png;base64," + base64.b64encode(raw[:len(raw) // 2]).decode()
    with pytest.raises(images.ImageError, match="not a readable"):
        images.decode_data_url(url)


def test_huge_bodies_are_refused_before_they_are_read(explorers):
    c = client(explorers["vae"])
    big = b"{" + b" " * (validation.MAX_BODY + 10) + b"}"
    res = c.post("/api/encode", content=big, headers={"content-type": "application/json"})
    assert res.status_code == 413 and "larger than" in res.json()["error"]

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(validation.MAX_BODY // 65536 + 2):
            yield b" " * 65536
    res = c.post("/api/encode", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    image = "data:image/png;base64," + "A" * (8 << 20)
    res = c.post("/api/encode", json={"image": image})
    assert res.status_code == 413


def test_wrong_methods_routes_types_and_hosts(explorers, runs):
    c = client(explorers["vae"])
    assert c.get("/api/decode").status_code == 405 and "error" in c.get("/api/decode").json()
    for path in ("/api/nothing", "/../config.json", "/static/../../checkpoint.safetensors",
                 "/" + runs["vae"] + "/config.json"):
        res = c.get(path)
        assert res.status_code == 404 and res.json() == {"error": "Not Found"}, path
    res = c.post("/api/decode", content=json.dumps({"z": [0] * 4}), headers={"content-type": "text/plain"})
    assert res.status_code == 415
    evil = TestClient(create_app(explorers["vae"]), base_url="http://attacker.example")
    assert evil.get("/api/info").status_code == 400                  # DNS rebinding
    assert c.get("/").status_code == 200 and "explore.js" in c.get("/").text


def test_a_conditional_model_needs_a_class_in_range(explorers):
    c = client(explorers["cvae"])
    for body, words in [({"z": [0, 0, 0]}, "send a class"), ({"z": [0, 0, 0], "y": 10}, "y must be in 0..9"),
                        ({"z": [0, 0, 0], "y": -1}, "y must be in 0..9")]:
        res = c.post("/api/decode", json=body)
        assert res.status_code == 400 and words in res.json()["error"]


def test_random_requests_never_get_a_500(explorers):
    """Fuzz: bodies of random shapes and values on every endpoint are answered with 200 or
    a 4xx, never an internal error."""
    rng = np.random.default_rng(0)
    values = [None, True, -1, 0, 3, 47, 48, 1e308, -1e-9, 0.5, "", "x", [], [0.1] * 4, [[1]], {}, {"a": 1},
              [0.0, 0.0], [1, 2, 3, 4, 5], "data:image/png;base64,"]
    fields = ["z", "y", "point", "a", "b", "t", "image", "n", "temperature", "seed", "fit", "invert"]
    c = client(explorers["vae"])
    paths = ["/api/decode", "/api/map", "/api/interpolate", "/api/encode", "/api/sample", "/api/background"]
    for _ in range(300):
        keys = rng.choice(fields, size=rng.integers(0, 4), replace=False)
        body = {k: values[rng.integers(len(values))] for k in keys}
        res = c.post(paths[rng.integers(len(paths))], json=body)
        assert res.status_code < 500, (body, res.text)
        assert res.status_code == 200 or "error" in res.json()


# ----------------------------------------------------------------------------- speed
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_decoding_an_mnist_model_takes_under_50_ms_median(net, capsys):
    """Server time per request (the Server-Timing header: from the request's arrival to its
    response's start) of 60 decodes and 60 map points, for MNIST-sized models: the MLP of the
    benchmarks (784-400-400-20) and the conv VAE (32-64 channels, latent 20). The weights
    are untrained: the work per request does not depend on their values."""
    torch.manual_seed(0)
    model = VAE(input_shape=(1, 28, 28), latent_dim=20, net=net,
                hidden=(400, 400) if net == "mlp" else (32, 64)).eval()
    x = (torch.rand(300, 1, 28, 28) < 0.2).float()
    ex = Explorer(RunData("mnist-sized", model, x, torch.arange(300) % 10, True, "standard_normal"),
                  n_reference=50, score_samples=20)
    c, rng = client(ex), np.random.default_rng(0)
    x0, x1, y0, y1 = ex.map.extent
    times = {"decode": [], "map": []}
    for i in range(60):
        for kind, body in (("decode", {"z": rng.normal(size=20).tolist()}),
                           ("map", {"point": [rng.uniform(x0, x1), rng.uniform(y0, y1)]})):
            res = c.post(f"/api/{kind}", json=body)
            assert res.status_code == 200
            times[kind].append(float(res.headers["server-timing"].split("dur=")[1]))
    with capsys.disabled():
        for kind, t in times.items():
            print(f"\n  {net} /api/{kind}: server time median {np.median(t):.2f} ms, "
                  f"p90 {np.percentile(t, 90):.2f} ms (60 requests, {torch.get_num_threads()} thread)", end="")
    assert np.median(times["decode"]) < 50 and np.median(times["map"]) < 50
    summary = c.get("/api/timings").json()
    assert summary["/api/decode"]["n"] == 60 and summary["/api/decode"]["median_ms"] < 50


# ----------------------------------------------------------------------------- the command
def test_cli_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    assert cli.main(["explore", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert cli.main(["explore", runs["vae"], "--port", "70000", "--no-browser"]) == 2
    assert "--port must be" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)    # the extra not installed
    assert cli.main(["explore", runs["vae"], "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[explore]"' in err


def test_a_port_in_use_is_a_one_line_error(runs, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert cli.main(["explore", runs["vae"], "--port", str(port), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_the_explorer_opens_no_file_for_writing(runs):
    """An audit hook sees every file Python opens: loading the run, start-up and requests
    of every kind open none for writing (and the run directory is unchanged)."""
    import os
    import sys
    from pathlib import Path
    writes, active = [], [True]

    def hook(event, args):
        if active[0] and event == "open":
            path, mode, flags = args
            if (mode and any(m in mode for m in "wax+")) or (
                    mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                writes.append(path)
    before = {p: p.stat().st_mtime_ns for p in Path(runs["cvae"]).rglob("*")}
    sys.addaudithook(hook)  # hooks cannot be removed: this one is switched off at the end
    try:
        ex = Explorer(load_run(runs["cvae"]))
        c = client(ex)
        for path, body in [("/api/info", None), ("/api/background", {"y": 2}),
                           ("/api/decode", {"z": [0, 0, 0], "y": 1}), ("/api/sample", {"y": 0}),
                           ("/api/encode", {"image": png_url(Image.new("L", (8, 8), 255)), "y": 3}),
                           ("/api/interpolate", {"a": 1, "b": 2, "t": 0.5, "y": 0})]:
            res = c.get(path) if body is None else c.post(path, json=body)
            assert res.status_code == 200, res.text
    finally:
        active[0] = False
    assert writes == []
    assert before == {p: p.stat().st_mtime_ns for p in Path(runs["cvae"]).rglob("*")}
