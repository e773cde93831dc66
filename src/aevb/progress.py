"""What training shows while it runs: a progress bar on a terminal, one line per epoch in a
log file, CI or a notebook's captured output.

`progress` (the argument of `aevb.train`, set by `aevb train`'s flags):

  True     a bar (tqdm, on stderr) when stderr is a terminal, and one line per epoch on
           stdout when stdout is not a terminal (the default of `aevb train`)
  "both"   the bar on a terminal, and the per-epoch lines always (`--log-every-epoch`)
  "lines"  the per-epoch lines only, never a bar (`--no-progress`)
  False    nothing (`--quiet`)

A per-epoch line (`format_epoch`) reads

  epoch 3/20  elbo train -120.45 test -121.02  kl train 25.10 test 25.31  4.1 s

ELBO and KL in nats per example (the record's train_/test_ means; an autoencoder shows its
reconstruction term `rec` instead), then the epoch's wall time.
"""
from __future__ import annotations

import sys

MODES = (True, False, "both", "lines")


def format_epoch(record: dict, epochs: int | None = None, seconds: float | None = None) -> str:
    """One line for a record of metrics.jsonl: epoch, train/test ELBO, train/test KL, the
    epoch's seconds (default: the record's `seconds`), and skipped steps if there were any."""
    parts = [f"epoch {record['epoch']}" + (f"/{epochs}" if epochs else "")]
    keys = [k for k in ("elbo", "kl") if f"train_{k}" in record or f"test_{k}" in record]
    for key in keys or ["rec"]:
        values = [f"{split} {record[f'{split}_{key}']:.2f}" for split in ("train", "test")
                  if f"{split}_{key}" in record]
        if values:
            parts.append(f"{key} " + " ".join(values))
    seconds = record.get("seconds") if seconds is None else seconds
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    if record.get("skipped_steps"):
        parts.append(f"skipped steps {record['skipped_steps']}")
    return "  ".join(parts)


class Reporter:
    """`update(n)` after n training steps, `epoch(record)` after each epoch, `close()` at
    the end: drives the bar and/or prints the per-epoch lines (see the module docstring)."""

    def __init__(self, progress=True, total: int = 0, initial: int = 0, epochs: int | None = None,
                 stdout=None, stderr=None):
        if progress not in MODES:
            raise ValueError(f"progress must be one of {MODES}, got {progress!r}")
        self.out = stdout or sys.stdout
        err = stderr or sys.stderr
        bar = progress in (True, "both") and _isatty(err)
        self.lines = progress in ("both", "lines") or (progress is True and not _isatty(self.out))
        self.epochs, self.last_seconds = epochs, 0.0
        self.bar = None
        if bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            mininterval=0.5, file=err)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def epoch(self, record: dict) -> None:
        seconds = record.get("seconds")
        took = None if seconds is None else max(0.0, seconds - self.last_seconds)
        self.last_seconds = seconds or 0.0
        line = format_epoch(record, self.epochs, took)
        if self.bar is not None:
            self.bar.set_postfix_str(format_epoch(record), refresh=False)
        if not self.lines:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
