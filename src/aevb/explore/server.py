"""The explorer's web server: a Starlette app around an `Explorer`, served by uvicorn.

Routes (no path parameters: the page and its two files are fixed names, read from the
package once; nothing else is read from disk after start-up, and nothing is written):
    GET  /  /explore.js  /explore.css     the page
    GET  /api/info                        the model, the map, sliders, gallery, notes
    GET  /api/timings                     server time per request so far (median, p90)
    POST /api/background {y}              the decoded map plane (a PNG)
    POST /api/decode {z, y}               a latent vector -> image (+ its map point)
    POST /api/map {point, y}              a map point -> latent vector -> image
    POST /api/interpolate {a, b, t, y}    between two gallery images' codes
    POST /api/encode {image, y, invert, fit}   a drawn or uploaded image: code, map point,
                                          reconstruction, anomaly score and percentile
    POST /api/sample {n, temperature, y, seed}
Every response carries `Server-Timing: app;dur=<ms>`, the time from the request's arrival
to its response's start. A bad request gets a 4xx with {"error": message}; the model runs
on the event loop's thread, one request at a time.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict, deque
from importlib import resources

import numpy as np

from . import validation as v
from .explorer import Explorer
from .images import ImageError, decode_data_url, prepare, tile, to_data_url

STATIC = {"/": ("index.html", "text/html"), "/explore.js": ("explore.js", "text/javascript"),
          "/explore.css": ("explore.css", "text/css")}
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


class ServerTiming:
    """ASGI middleware: adds `Server-Timing: app;dur=<ms>` to every response and keeps the
    last 1,000 times of each path in `times` (milliseconds)."""

    def __init__(self, app):
        self.app, self.times = app, defaultdict(lambda: deque(maxlen=1000))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()

        async def timed(message):
            if message["type"] == "http.response.start":
                ms = 1000 * (time.perf_counter() - t0)
                self.times[scope["path"]].append(ms)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", f"app;dur={ms:.2f}".encode())]}
            await send(message)
        await self.app(scope, receive, timed)

    def summary(self) -> dict:
        return {path: {"n": len(t), "median_ms": round(float(np.median(t)), 2),
                       "p90_ms": round(float(np.percentile(t, 90)), 2)}
                for path, t in sorted(self.times.items()) if path.startswith("/api/") and t}


def _r(values, digits: int = 4) -> list:
    return [round(float(x), digits) for x in np.asarray(values).ravel()]


def _finite(x: float, digits: int) -> float | None:
    """`x` rounded, or None (JSON null) when it is not finite (JSON has no NaN)."""
    return round(x, digits) if np.isfinite(x) else None


def page_info(ex: Explorer) -> dict:
    """Everything the page needs once: model, map, sliders, gallery, notes."""
    run, m = ex.run, ex.map
    g = ex.gallery
    cols = min(12, len(g)) or 1
    return {
        "run": run.name, "info": run.info, "input_shape": list(ex.shape), "latent_dim": ex.latent_dim,
        "num_classes": ex.num_classes, "class_names": run.class_names, "prior": ex.prior,
        "binarized": run.binarized, "notes": notes(ex),
        "map": {"kind": m.kind, "describe": m.describe(), "extent": list(m.extent), "plane": m.plane,
                "x": _r(m.coords[:, 0], 3), "y": _r(m.coords[:, 1], 3),
                "labels": None if ex.y is None else ex.y.tolist()},
        "sliders": [{"dim": d, "variance": round(float(ex.variance[d]), 4), "range": _r(r)}
                    for d, r in zip(ex.order, ex.slider_ranges())],
        "start": _r(np.zeros(ex.latent_dim) if ex.prior == "standard_normal" else ex.code_mean),
        "gallery": {"image": to_data_url(tile(ex.x[g], cols)) if len(g) else None, "cols": cols,
                    "n": len(g), "labels": None if ex.y is None else ex.y[g].tolist()},
        "score": {"samples": ex.score_samples, "reference": len(ex.reference),
                  "kind": "reconstruction loss -log p(x|enc(x))" if ex.prior == "none"
                  else f"-log p(x), importance-sampled with K={ex.score_samples}",
                  "reference_median": round(float(ex.reference.median()), 2) if len(ex.reference) else None},
    }


def notes(ex: Explorer) -> list[str]:
    """What does not apply to this model, or applies differently, in words for the page."""
    out = []
    if ex.prior == "none":
        out.append("An autoencoder has no prior: 'sample' draws codes from a Gaussian fitted to the "
                   "test codes (the temperature scales its spread), and the anomaly score is the "
                   "reconstruction loss -log p(x|enc(x)), not -log p(x).")
    if ex.prior == "other":
        out.append("Binary latent codes: sliders go from 0 to 1 (values in between are decoded as "
                   "given); samples come from the model's own prior, so the temperature does not apply.")
    if ex.num_classes:
        out.append("A conditional model: every image is decoded with the class chosen above; the "
                   "anomaly score of a new image is the marginal over classes (its class is unknown).")
    if ex.run.binarized:
        out.append("The run's images were binarized, so a drawn or uploaded image is thresholded at 1/2.")
    if ex.run.y is None:
        out.append("The dataset has no labels: the map's points are not coloured by class.")
    return out


# ----------------------------------------------------------------------------- endpoints
# each: (explorer, validated JSON body) -> JSON-able dict; `FIELDS` names their fields
# (True = required)
def _decoded(ex: Explorer, z, y) -> dict:
    z = np.asarray(z, dtype=np.float64)
    return {"z": _r(z, 5), "map": _r(ex.map.to_map(z)), "image": to_data_url(ex.decode(z, y))}


def api_background(ex, body):
    image = ex.background(v.label(body.get("y"), ex.num_classes))
    return {"image": None if image is None else to_data_url(image)}


def api_decode(ex, body):
    y = v.label(body.get("y"), ex.num_classes)
    return _decoded(ex, v.vector(body["z"], "z", ex.latent_dim), y)


def api_map(ex, body):
    x0, x1, y0, y1 = ex.map.extent
    u, w = v.vector(body["point"], "point", 2, bound=1e6)
    point = (v.number(u, "point[0]", x0, x1), v.number(w, "point[1]", y0, y1))
    return _decoded(ex, ex.from_map(point), v.label(body.get("y"), ex.num_classes))


def api_interpolate(ex, body):
    n = len(ex.gallery)
    if not n:
        raise v.BadRequest("no test images to interpolate between", 409)
    a, b = v.integer(body["a"], "a", 0, n - 1), v.integer(body["b"], "b", 0, n - 1)
    t = v.number(body["t"], "t", 0.0, 1.0)
    return _decoded(ex, ex.interpolate(a, b, t), v.label(body.get("y"), ex.num_classes))


def api_encode(ex, body):
    y = v.label(body.get("y"), ex.num_classes)
    invert, fit = v.flag(body.get("invert", False), "invert"), v.flag(body.get("fit", False), "fit")
    x = prepare(decode_data_url(body["image"]), ex.shape, invert, fit, ex.run.binarized)
    res = ex.encode(x, y)
    return {"input": to_data_url(x), "reconstruction": to_data_url(res["reconstruction"]),
            "z": _r(res["z"], 5), "map": _r(res["map"]), "score": _finite(res["score"], 3),
            "percentile": _finite(res["percentile"], 1)}


def api_sample(ex, body):
    n = v.integer(body.get("n", 8), "n", 1, 64)
    temperature = v.number(body.get("temperature", 1.0), "temperature", 0.0, 5.0)
    seed = None if body.get("seed") is None else v.integer(body["seed"], "seed", 0, 2**31 - 1)
    images = ex.sample(n, temperature, v.label(body.get("y"), ex.num_classes), seed)
    return {"images": [to_data_url(im) for im in images]}


FIELDS = {
    "/api/background": (api_background, {"y": False}),
    "/api/decode": (api_decode, {"z": True, "y": False}),
    "/api/map": (api_map, {"point": True, "y": False}),
    "/api/interpolate": (api_interpolate, {"a": True, "b": True, "t": True, "y": False}),
    "/api/encode": (api_encode, {"image": True, "y": False, "invert": False, "fit": False}),
    "/api/sample": (api_sample, {"n": False, "temperature": False, "y": False, "seed": False}),
}


# ----------------------------------------------------------------------------- the app
def create_app(ex: Explorer, allowed_hosts=None, threads: int = 1):
    """The Starlette app serving explorer `ex`; requests whose Host header is not in
    `allowed_hosts` (default: this machine's loopback names) are refused, so that no other
    web site can reach the server through DNS rebinding. The model runs with `threads`
    intra-op threads (one image is too small a job to share; see `_threads`)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    files = {path: (resources.files(__package__).joinpath("static", name).read_bytes(), kind)
             for path, (name, kind) in STATIC.items()}
    info = page_info(ex)
    timing = None

    def page(request):
        body, kind = files[request.url.path]
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    async def api(request):
        fn, fields = FIELDS[request.url.path]
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise v.BadRequest("send the request body as JSON (Content-Type: application/json)", 415)
            body = await v.read_json(request, fields)
            _threads(threads)
            return JSONResponse(fn(ex, body))
        except (v.BadRequest, ImageError) as e:
            return JSONResponse({"error": str(e)}, e.status)
        except Exception as e:  # a bug: one line in the terminal, no traceback to the page
            print(f"aevb explore: {request.url.path}: {type(e).__name__}: {e}", file=sys.stderr)
            return JSONResponse({"error": f"internal error ({type(e).__name__}); see the terminal"}, 500)

    async def http_error(request, exc):
        return JSONResponse({"error": exc.detail}, exc.status_code)

    routes = [Route(p, page) for p in files] + [Route(p, api, methods=["POST"]) for p in FIELDS]
    routes.append(Route("/favicon.ico", lambda r: Response(status_code=204)))
    routes += [Route("/api/info", lambda r: JSONResponse(info)),
               Route("/api/timings", lambda r: JSONResponse(timing.summary()))]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOCAL_HOSTS)
    timing = ServerTiming(app)
    return timing


_local = threading.local()


def _threads(n: int) -> None:
    """Set the intra-op thread count in the thread that runs the model, once per thread.
    With OpenMP the count is per OS thread: a thread that never set it uses all CPUs, and on
    a busy 2-core machine its spinning workers made a 1 ms decode take 120 ms (measured)."""
    if getattr(_local, "threads", None) != n:
        import torch
        torch.set_num_threads(n)
        _local.threads = n


def allowed_hosts(host: str) -> list[str]:
    """The Host headers to accept: loopback names, plus `host` itself; any host when the
    server listens on every interface (0.0.0.0 or ::), as the user then asked for."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return [*LOCAL_HOSTS, host.strip("[]").lower()]


def serve(run_dir, host: str = "127.0.0.1", port: int = 8000, open_browser: bool = True,
          map_kind: str = "pca", data_dir=None, threads: int = 1) -> int:
    """Load the run, compute what the page needs, and serve it until Ctrl-C. The port is
    taken first (a port in use fails at once, as an OSError naming it), and listens before
    the address is printed and the browser opened. Requests run with `threads` intra-op
    threads."""
    import webbrowser

    import uvicorn

    from .adapter import load_run
    with _bind(host, port) as sock:
        t0 = time.perf_counter()
        run = load_run(run_dir, data_dir)
        ex = Explorer(run, map_kind=map_kind)
        print(f"aevb explore: {run.name}: {len(ex.x)} test codes, map {ex.map.kind}, anomaly scores "
              f"of {len(ex.reference)} test images; ready in {time.perf_counter() - t0:.1f} s")
        app = create_app(ex, allowed_hosts(host), threads)
        sock.listen(128)
        name = host.strip("[]")
        url = f"http://{f'[{name}]' if ':' in name else name}:{sock.getsockname()[1]}/"
        print(f"aevb explore: serving {run.name} at {url}  (Ctrl-C stops)", flush=True)
        if open_browser:
            webbrowser.open(url)
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
    return 0


def _bind(host: str, port: int):
    """A TCP socket bound to (host, port), not yet listening; OSError naming them if taken."""
    import socket
    name = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((name, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    return sock
