"""The HTML report of a run: one self-contained page (figures embedded as base64 PNG) with
the run's config, its numbers (eval.json when `aevb eval` has been run, else the last epoch of
metrics.jsonl), the training curves and every figure that applies to the model.

    from aevb import report
    report.write_report("runs/mnist")          # -> runs/mnist/report.html (+ figures/*.png)

The run directory is read by `aevb.runs` (config, model, history, eval.json, dataset).
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import time
import warnings
from pathlib import Path

from .evaluation import NotApplicable
from .runs import open_run, run_dataset
from .serialization import CheckpointError

#: figure kind -> (section title, caption); the order of the page
FIGURES = {
    "samples": ("Samples",
                "Codes z decoded (from the prior p(z); an autoencoder's from a Gaussian fitted to "
                "its training codes, as the figure's title says): the decoder means E[x|z] (the "
                "distributions) and the most probable values (thresholded at 1/2 for binary pixels)."),
    "recon": ("Reconstructions", "Test images (left) and E[x | z = E_q z] (right)."),
    "manifold": ("Learned manifold",
                 "Decoder means over latent points Phi^-1(u) for u on a regular grid of the unit "
                 "square (Kingma & Welling fig. 4), over the two most active latent dimensions "
                 "(the title names them); other dimensions at 0."),
    "latent": ("Latent space", "Posterior means of test images, coloured by label."),
    "interpolate": ("Interpolation",
                    "Decoder means along straight lines between the posterior means of pairs of "
                    "test images."),
    "denoise": ("Denoising", "Salt-and-pepper corrupted test images and their reconstructions."),
}


# ----------------------------------------------------------------------------- figures
def make_figures(model, dataset, out_dir, history=None, kinds=None, fast: bool = False,
                 tsne: bool | None = None, noise: float = 0.0, seed: int = 0, may_write=None) -> dict:
    """Draw every figure of `kinds` (default: all that apply) into `out_dir`/<kind>.png.

    Returns {kind: Path, or BytesIO, or "not shown: reason"}. `fast` keeps them cheap (fewer
    images, no t-SNE) for the end of training; `noise` is the training noise rate, used as
    the rate of the denoising figure (0.2 when 0). A figure whose file `may_write(path)`
    refuses is drawn into memory (a BytesIO) instead."""
    from . import plots
    kinds = list(kinds or ["curves", *FIGURES])
    tsne = (not fast) if tsne is None else tsne
    out_dir = Path(out_dir)
    result = {}
    for kind in kinds:
        opts = {"seed": seed, "tsne": tsne, "rate": noise or 0.2}
        if fast and kind == "latent":
            opts["n"] = 1000
        if fast and kind == "manifold":
            opts["n"] = 15
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = out_dir / f"{kind}.png"
                target = target if may_write is None or may_write(target) else io.BytesIO()
                result[kind] = plots.make(kind, model, dataset, target, history=history, **opts)
        except NotApplicable as e:
            result[kind] = f"not shown: {e}"
        except Exception as e:  # one broken figure must not cost the report (or a training run)
            warnings.warn(f"figure {kind!r} failed: {type(e).__name__}: {e}")
            result[kind] = f"not shown: drawing it failed ({type(e).__name__}: {e})"
    return result


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin:0 0 16px} table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;font-size:14px} th{background:#f3f3f3}
td.num{text-align:right;font-family:Menlo,Consolas,monospace} figure{margin:12px 0}
figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:13px;margin-top:4px}
.note{color:#888;font-style:italic} .cols{display:flex;gap:24px;flex-wrap:wrap}
code{background:#f3f3f3;padding:1px 4px}
"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.3f}".rstrip("0").rstrip(".")
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _table(rows, head=None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i > 0 and isinstance(c, (int, float)) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(path, name: str) -> str:
    """An <img> holding PNG file `path` (or the bytes of a BytesIO)."""
    raw = path.getvalue() if isinstance(path, io.BytesIO) else Path(path).read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def _numbers_html(ev: dict | None, history: list[dict]) -> str:
    if ev:
        rows = [["test images", ev.get("n"), None]]
        for key, label in (("elbo", "ELBO"), ("rec", "E_q log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")):
            if key in ev:
                rows.append([f"{label} [nats]", ev[key], ev.get(f"{key}_stderr")])
        if "log_px" in ev:
            px = "log p(x|y)" if ev.get("conditional") else "log p(x)"
            rows.append([f"{px}, importance sampled, K = {ev['nll_samples']} [nats]",
                         ev["log_px"], ev.get("log_px_stderr")])
            rows.append([f"ELBO of the same K = {ev['nll_samples']} samples [nats]", ev.get("elbo_is"), None])
            rows.append(["gap: log p(x) - that ELBO [nats]", ev.get("gap"), ev.get("gap_stderr")])
            rows.append(["effective sample size: mean, median, minimum over images",
                         " / ".join(_fmt(ev[k]) for k in ("ess", "ess_median", "ess_min") if k in ev), None])
        elif "log_px_skipped" in ev:
            rows.append(["log p(x)", "not estimated: " + ev["log_px_skipped"], None])
        for key, label in (("bits_per_dim", "bits/dim (log p(x))"), ("bits_per_dim_elbo", "bits/dim (ELBO)")):
            if key in ev:
                rows.append([label, ev[key], None])
        if "active_units" in ev:
            rows.append([f"active units (Cov_x E_q[z_u] > {ev.get('threshold', 0.01)})",
                         f"{ev['active_units']} / {ev['latent_dim']}", None])
        rows = [[r[0], r[1], "" if r[2] is None else r[2]] for r in rows]
        out = [_table(rows, ["quantity", "value", "std. error"]),
               '<p class="note">From eval.json (aevb eval); nats per example, summed over '
               'pixels; standard errors over test images.</p>']
        if ev.get("denoising"):
            out.append("<h3>Denoising error against the noise rate</h3>")
            out.append(_table([[d["rate"], d["mse"], d["bce"], d["noisy_mse"]] for d in ev["denoising"]],
                              ["salt-and-pepper rate", "MSE / pixel", "BCE / pixel [nats]",
                               "MSE of the noisy input"]))
        return "\n".join(out)
    if history:
        last = history[-1]
        rows = [[k, v] for k, v in last.items()]
        return (_table(rows, ["metric (last epoch)", "value"]) +
                '<p class="note">The last epoch of metrics.jsonl (nats per example). Run '
                '<code>aevb eval RUN</code> for the importance-sampled log p(x), active units '
                'and standard errors.</p>')
    return '<p class="note">No numbers yet: no eval.json and no metrics.jsonl.</p>'


def render_html(title: str, config: dict, ev: dict | None, history: list[dict], figures: dict,
                notes=()) -> str:
    """The page as a string: header, numbers, training curves, figures, config."""
    model_cfg = config.get("model_config", {})
    run_cfg = {k: v for k, v in config.items() if k != "model_config"}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
             f"{html.escape(title)} - aevb report</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="sub">{html.escape(_summary(config, history))}</p>']
    for note in notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append('<section id="numbers"><h2>Numbers</h2>')
    parts.append(_numbers_html(ev, history))
    parts.append("</section>")
    parts.append('<section id="curves"><h2>Training curves</h2>')
    curves = figures.get("curves")
    if isinstance(curves, (Path, io.BytesIO)):
        parts.append(f"<figure>{_img(curves, 'curves')}<figcaption>Train and test ELBO (and KL) per epoch, "
                     "nats per example.</figcaption></figure>")
    else:
        parts.append(f'<p class="note">{html.escape(str(curves or "no training history"))}</p>')
    parts.append("</section>")
    parts.append('<section id="figures"><h2>Figures</h2>')
    for kind, (head, caption) in FIGURES.items():
        if kind not in figures:
            continue
        got = figures[kind]
        parts.append(f'<section id="fig-{kind}"><h3>{html.escape(head)}</h3>')
        if isinstance(got, (Path, io.BytesIO)):
            parts.append(f"<figure>{_img(got, kind)}<figcaption>{html.escape(caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="note">{html.escape(str(got))}</p>')
        parts.append("</section>")
    parts.append("</section>")
    parts.append('<section id="config"><h2>Config</h2><div class="cols">')
    parts.append("<div><h3>Run</h3>" + _table(sorted(run_cfg.items()), ["key", "value"]) + "</div>")
    if model_cfg:
        parts.append("<div><h3>Model</h3>" + _table(sorted(model_cfg.items()), ["key", "value"]) + "</div>")
    parts.append("</div></section>")
    from . import __version__
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(f'<p class="note">Written by aevb {__version__} on {stamp}.</p></main></body></html>')
    return "\n".join(parts)


def _summary(config: dict, history: list[dict]) -> str:
    m = config.get("model_config", {})
    bits = [f"model {m.get('model', config.get('model', '?'))}",
            f"dataset {config.get('dataset', '?')} (binarize {config.get('binarize', '?')})",
            f"latent {m.get('latent_dim', config.get('latent_dim', '?'))}-D "
            f"{m.get('latent_family', m.get('latent', ''))}".rstrip(),
            f"likelihood {m.get('likelihood', config.get('likelihood', '?'))}"]
    if history:
        bits.append(f"{history[-1].get('epoch', len(history))} epochs"
                    + (f" in {history[-1]['seconds']:.0f} s" if "seconds" in history[-1] else ""))
    return ", ".join(bits)


def write_report(run_dir, model=None, dataset=None, out=None, fast: bool = False,
                 tsne: bool | None = None, data_dir=None, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the report of run `run_dir` to `out` (default RUN/report.html), drawing its
    figures into RUN/figures/. `model` / `dataset` default to the run's checkpoint and the
    dataset of its config (figures needing test images are left out, with the reason, when
    the data cannot be loaded). `fast` (used at the end of `aevb train`) keeps the figures
    cheap: fewer points and no t-SNE. An existing page is replaced only with `overwrite` and
    only if aevb wrote it (`aevb.rundir.output_file`); a figure file in RUN/figures/ that may
    not be replaced by that rule is kept, and the page embeds the fresh figure all the same."""
    from .rundir import RunDirError, output_file
    from .serialization import atomic_write
    t0 = time.perf_counter()
    run = open_run(run_dir, load_model=model is None)
    out = output_file(out or run.dir / "report.html", overwrite)

    def may_write(path) -> bool:  # RUN/figures/: new files, or with overwrite aevb's own
        try:
            return bool(output_file(path, overwrite))
        except RunDirError:
            return False
    model = model if model is not None else run.model
    notes = []
    if dataset is None:
        try:
            dataset = run_dataset(run.config, data_dir)
        except Exception as e:  # a report without the data still shows samples and numbers
            notes.append(f"Dataset not available ({type(e).__name__}: {e}); figures of test "
                         "images are left out.")
    noise = run.config.get("noise")
    noise = noise if isinstance(noise, float) and 0 < noise <= 1 else 0.0
    figures = make_figures(model, dataset, run.dir / "figures", run.history, fast=fast, tsne=tsne,
                           noise=noise, seed=seed, may_write=may_write)
    try:
        page = render_html(run.name, run.config, run.eval, run.history, figures, notes)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # hand-edited files
        raise CheckpointError(f"{run.dir}: its config.json or eval.json is not as aevb wrote it "
                              f"({type(e).__name__}: {str(e)[:80]}); run aevb eval --overwrite, "
                              "or restore them") from None
    atomic_write(out, page.encode("utf-8"))
    write_report.seconds = time.perf_counter() - t0
    return out


def refresh_report(run_dir) -> Path | None:
    """Rewrite RUN/report.html with the run's current numbers (eval.json after `aevb eval`),
    keeping the figures already drawn in RUN/figures (none is redrawn: cheap); None when
    the run has no report yet, or one aevb did not write (`rundir.owned`)."""
    from . import rundir
    run = open_run(run_dir, load_model=False)
    out = run.dir / "report.html"
    if not out.exists() or not rundir.owned(out):
        return None
    drawn = {k: run.dir / "figures" / f"{k}.png" for k in ["curves", *FIGURES]}
    figures = {k: p for k, p in drawn.items() if p.exists()}
    from .serialization import atomic_write
    atomic_write(out, render_html(run.name, run.config, run.eval, run.history, figures).encode())
    return out
