"""`aevb compare RUN1 RUN2 ... --out DIR`: one table and one figure of several runs.

Columns: test ELBO and log p(x) (from each run's eval.json; the ELBO falls back to the last
epoch of metrics.jsonl, marked *), Inception FID, precision, recall, domain FID, precision,
recall and reconstruction MSE (from the "quality" block that `aevb eval RUN --fid` or
`--domain-fid` writes to eval.json), parameters (from the checkpoint) and training time
(metrics.jsonl). A number a run does not have is shown as "-"; nothing is computed here.
Below the table: how each FID was computed (implementation, weights' sha256, N).

Files, all in DIR: compare.md, compare.csv, compare.png and compare.json (the rows and the
sha256 of every file written). A file of these names that aevb compare did not write (or
that changed since) is never replaced: the command stops and says so.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
from pathlib import Path

from ..serialization import atomic_write
from .run_access import n_parameters, open_run, training_seconds

#: (column, format) in table order; rows are dicts with these keys
COLUMNS = (("run", "{}"), ("test ELBO", "{:.2f}"), ("log p(x)", "{:.2f}"), ("FID", "{:.2f}"),
           ("precision", "{:.3f}"), ("recall", "{:.3f}"), ("domain FID", "{:.2f}"),
           ("domain precision", "{:.3f}"), ("domain recall", "{:.3f}"), ("recon MSE", "{:.4f}"),
           ("parameters", "{:,}"), ("train s", "{:.1f}"))
FILES = ("compare.md", "compare.csv", "compare.png", "compare.json")


def _elbo(run) -> str | float | None:
    ev = run.eval or {}
    if ev.get("elbo") is not None:
        return ev["elbo"]
    last = [h["test_elbo"] for h in run.history if "test_elbo" in h]
    return f"{last[-1]:.2f}*" if last else None


def run_row(path) -> dict:
    """The numbers of one run directory (None where it has none)."""
    run = open_run(path)
    ev = run.eval or {}
    q = ev.get("quality", {})
    inc, dom = q.get("inception", {}), q.get("domain", {})
    return {"run": str(path), "test ELBO": _elbo(run), "log p(x)": ev.get("log_px"),
            "FID": inc.get("fid"), "precision": inc.get("precision"), "recall": inc.get("recall"),
            "domain FID": dom.get("fid"), "domain precision": dom.get("precision"),
            "domain recall": dom.get("recall"), "recon MSE": q.get("recon_mse"),
            "parameters": n_parameters(run.model), "train s": training_seconds(run.history),
            "_fid": _how(inc, "weights sha256 " + inc.get("weights", {}).get("sha256", "?")),
            "_domain_fid": _how(dom, _classifier(dom.get("classifier", {})))}


def _classifier(c: dict) -> str:
    return f"classifier sha256 {c.get('sha256', '?')} (test accuracy {c.get('test_accuracy', 0):.4f})"


def _how(block: dict, what: str) -> str | None:
    if not block:
        return None
    return f"{block['implementation']}, {what}, N = {block['n_samples']} samples vs {block['n_real']} test images"


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def markdown(rows: list[dict]) -> str:
    """The table (markdown) and, below it, how each FID was computed."""
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c], f) for c, f in COLUMNS) + " |" for r in rows]
    for key, name in (("_fid", "FID"), ("_domain_fid", "domain FID")):
        hows = sorted({r[key] for r in rows if r[key]})
        if len(hows) > 1:
            lines.append(f"\nWarning: the {name}s below were computed differently and do not compare:")
        lines += [f"\n{name}: {h}" if len(hows) == 1 else f"- {h}" for h in hows]
    if any(isinstance(r["test ELBO"], str) for r in rows):
        lines.append("\n* test ELBO of the last training epoch (metrics.jsonl); run `aevb eval` for eval.json")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c for c, _ in COLUMNS])
    w.writerows([["" if r[c] is None else r[c] for c, _ in COLUMNS] for r in rows])
    return buf.getvalue()


def figure(rows: list[dict]) -> bytes:
    """One horizontal bar chart per numeric column that some run has, as PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, any backend
    cols = [c for c, _ in COLUMNS[1:] if any(isinstance(r[c], (int, float)) for r in rows)]
    fig = Figure(figsize=(2.6 * max(len(cols), 1), 0.5 * len(rows) + 1.5))
    axes = fig.subplots(1, max(len(cols), 1), squeeze=False)
    names = [Path(r["run"]).name for r in rows]
    for ax, col in zip(axes[0], cols):
        vals = [r[col] if isinstance(r[col], (int, float)) else float("nan") for r in rows]
        ax.barh(range(len(rows)), vals, color="tab:blue")
        ax.set_title(col, fontsize=9)
        ax.set_yticks(range(len(rows)), names if ax is axes[0][0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_ours(out: Path) -> None:
    """Refuse when a file of ours exists in `out` that compare.json does not vouch for."""
    written = {}
    manifest = out / "compare.json"
    if manifest.exists():
        try:
            written = json.loads(manifest.read_text())["written_by_aevb_compare"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise FileExistsError(errno.EEXIST, "exists and was not written by aevb compare; "
                                  "choose another --out", str(manifest)) from None
    for name in FILES[:-1]:
        p = out / name
        if p.exists() and written.get(name) != _sha256(p.read_bytes()):
            raise FileExistsError(errno.EEXIST, "exists and was not written by aevb compare (or was "
                                  "changed since); choose another --out", str(p))


def compare(runs, out) -> dict:
    """Write the table, CSV and figure of `runs` into directory `out`; returns
    {"markdown": text, "files": [paths]}."""
    rows = [run_row(r) for r in runs]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "--out must be a directory", str(out))
    if out.exists():
        _check_ours(out)
    else:
        out.mkdir(parents=True)
    text = markdown(rows)
    contents = {"compare.md": text.encode(), "compare.csv": csv_text(rows).encode(), "compare.png": figure(rows)}
    manifest = {"written_by_aevb_compare": {k: _sha256(v) for k, v in contents.items()},
                "runs": [str(r) for r in runs],
                "rows": rows}
    contents["compare.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    for name, data in contents.items():
        atomic_write(out / name, data)
    return {"markdown": text, "files": [str(out / n) for n in contents]}
