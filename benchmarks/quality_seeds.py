"""The same-model pairs of quality.py over several training seeds: one run per seed, read
back from their quality.json files.

    python benchmarks/quality_seeds.py RUN.json[:PAIRS] [RUN.json[:PAIRS] ...] [--out FILE.md]

`RUN.json:iwae,vamp` takes only those pairs from that run (named by their aevb entry without
"aevb-"), e.g. where a later run of the same seed replaces another pair of it. A pair given
twice for one seed is refused: a repeat is not another seed.

One run's standard errors are over evaluation images only; what a different seed changes
(the weights' initialization, the batches, the noise, and so the epoch that the held-out
images select) is not in them. Here each pair's difference (aevb - pythae, nats) is taken
per seed, and their mean is reported with its standard error over seeds (sd / sqrt(n)):
the target "aevb at least as good as pythae's same model" is met when the mean is >= 0;
"within noise" when it is within two of those standard errors of 0.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import result_files  # noqa: E402
from quality import PAIRS  # noqa: E402


def pair_rows(runs: list[dict]) -> list[dict]:
    """Per pair present in at least one run: the per-seed differences and their summary."""
    rows = []
    for a, b in PAIRS:
        per_seed = []
        for run in runs:
            ra, rb = run["results"].get(a, {}), run["results"].get(b, {})
            if "log_px" in ra and "log_px" in rb:
                per_seed.append({"seed": run["seed"], "aevb": ra["log_px"], "pythae": rb["log_px"],
                                 "diff": ra["log_px"] - rb["log_px"],
                                 "best_epochs": (ra.get("best_epoch"), rb.get("best_epoch"))})
        if not per_seed:
            continue
        diffs = [s["diff"] for s in per_seed]
        mean = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
        noise = ("one seed: no spread to judge by" if len(diffs) == 1 else "within noise" if abs(mean) < 2 * se
                 else "holds" if mean > 0 else "does not hold")
        rows.append({"pair": (a, b), "seeds": per_seed, "mean": mean, "se": se,
                     "verdict": f"{'met' if mean >= 0 else 'NOT met'} ({noise})"})
    return rows


def report(rows: list[dict], files: list[str]) -> str:
    out = ["| pair | aevb - pythae per seed (log p(x) of each) | mean ± s.e. over seeds | target |",
           "| --- | --- | ---: | --- |"]
    for r in rows:
        cells = "; ".join(f"seed {s['seed']}: {s['diff']:+.2f} ({s['aevb']:.2f} vs {s['pythae']:.2f})" for s in r["seeds"])
        se = f"{r['se']:.2f}" if r["se"] == r["se"] else "-"
        out.append(f"| {r['pair'][0]} - {r['pair'][1]} | {cells} | {r['mean']:+.2f} ± {se} | {r['verdict']} |")
    return "\n".join(out + ["", "Runs: " + ", ".join(files)])


def read_runs(specs: list[str]) -> list[dict]:
    """The runs named by RUN.json[:PAIRS] arguments; ValueError (a one-line reason) when a file
    cannot be read, a pair is unknown, or a pair comes twice for one seed."""
    known = {a.removeprefix("aevb-") for a, _ in PAIRS}
    runs, seen = [], {}
    for spec in specs:
        f, _, names = spec.partition(":")
        pairs = set(names.split(",")) if names else None
        if pairs and not pairs <= known:
            raise ValueError(f"unknown pair {', '.join(sorted(pairs - known))} in {spec}; "
                             f"choose from {', '.join(sorted(known))}")
        try:
            d = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {f}: {e}; give quality.json files written by benchmarks/quality.py")
        words = str(d.get("command", "")).split()
        seed = next((int(x) for flag, x in zip(words, words[1:]) if flag == "--seed"), 0)
        results = {k: v for k, v in d.get("results", {}).items()
                   if pairs is None or k.split("-", 1)[-1] in pairs}
        for a, b in PAIRS:
            if "log_px" in results.get(a, {}) and "log_px" in results.get(b, {}):
                name = a.removeprefix("aevb-")
                if (name, seed) in seen:
                    raise ValueError(f"pair {name} at seed {seed} is in both {seen[name, seed]} and {f}; "
                                     f"keep one, e.g. {f}:PAIRS naming the pairs to take from it")
                seen[name, seed] = f
        runs.append({"seed": seed, "results": results})
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="quality.json files, one per seed; FILE:vae,iaf takes only those pairs")
    p.add_argument("--out", help="also write the table to this markdown file")
    a = p.parse_args(argv)
    try:
        runs = read_runs(a.runs)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if a.out:
        result_files.check(a.out, "quality_seeds.py")
    text = report(pair_rows(runs), a.runs)
    print(text)
    if a.out:
        cmd = result_files.command("quality_seeds.py", argv)
        result_files.write(a.out, "# quality.py's same-model pairs over training seeds\n\n"
                           "aevb - pythae in log p(x) (K=5000, 5,000 evaluation images), nats; the target is met "
                           "when the mean over seeds is >= 0.\n\n" + text + f"\n\nCommand: `{cmd}`\n", "quality_seeds.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
