"""What training prints: a bar on a terminal, one line per epoch in a log file (aevb.progress)."""
import io
import re
import subprocess
import sys

import pytest

from aevb.cli import main
from aevb.progress import Reporter, format_epoch

LINE = re.compile(r"^epoch (\d+)/(\d+)  elbo train -?\d+\.\d\d test -?\d+\.\d\d  "
                  r"kl train -?\d+\.\d\d test -?\d+\.\d\d  \d+\.\d s$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


RECORD = {"epoch": 3, "train_elbo": -120.4567, "train_rec": -95.0, "train_kl": 25.1, "test_elbo": -121.02,
          "test_rec": -95.7, "test_kl": 25.314, "seconds": 12.34, "skipped_steps": 0}


def test_epoch_line_format():
    assert format_epoch(RECORD, 20, 4.06) == \
        "epoch 3/20  elbo train -120.46 test -121.02  kl train 25.10 test 25.31  4.1 s"
    assert format_epoch(RECORD) == "epoch 3  elbo train -120.46 test -121.02  kl train 25.10 test 25.31  12.3 s"
    ae = {"epoch": 1, "train_rec": -30.5, "train_mse": 0.1, "test_rec": -31.25, "seconds": 1.0, "skipped_steps": 2}
    assert format_epoch(ae, 5) == "epoch 1/5  rec train -30.50 test -31.25  1.0 s  skipped steps 2"
    assert LINE.match(format_epoch(RECORD, 20, 4.06))


def feed(reporter, epochs=2):
    for e in range(1, epochs + 1):
        reporter.update(5)
        reporter.epoch({**RECORD, "epoch": e, "seconds": 1.5 * e})
    reporter.close()


@pytest.mark.parametrize("progress, out_tty, err_tty, lines, bar", [
    (True, False, False, True, False),    # a log file: lines, no carriage returns
    (True, True, True, False, True),      # a terminal: the bar only
    (True, False, True, True, True),      # stdout to a file, the bar still on the terminal
    ("both", True, True, True, True),     # --log-every-epoch on a terminal
    ("lines", True, True, True, False),   # --no-progress
    (False, False, False, False, False),  # --quiet
])
def test_reporter_modes(progress, out_tty, err_tty, lines, bar):
    out = Terminal() if out_tty else io.StringIO()
    err = Terminal() if err_tty else io.StringIO()
    feed(Reporter(progress, total=10, epochs=2, stdout=out, stderr=err))
    got = [x for x in out.getvalue().splitlines() if x]
    if lines:
        assert len(got) == 2 and all(LINE.match(x) for x in got), got
        assert got[1].endswith("  1.5 s")  # the epoch's own seconds, not the running total
    else:
        assert got == []
    assert ("\r" in err.getvalue()) == bar
    with pytest.raises(ValueError, match="progress"):
        Reporter("sometimes")


TRAIN = ["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "2", "--no-figures"]


def _epoch_lines(stdout: str) -> list[str]:
    lines = [x for x in stdout.splitlines() if x.startswith("epoch ")]
    assert all(LINE.match(x) for x in lines), stdout
    return lines


def test_cli_prints_one_line_per_epoch_into_a_pipe(tmp_path):
    """A real process whose stdout and stderr are pipes: the lines, and no carriage returns."""
    r = subprocess.run([sys.executable, "-m", "aevb", *TRAIN, "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [LINE.match(x).group(1, 2) for x in _epoch_lines(r.stdout)] == [("1", "2"), ("2", "2")]
    assert "\r" not in r.stderr  # no tqdm bar written into a pipe


@pytest.mark.parametrize("flags, n_lines", [(("--no-progress",), 2), (("--log-every-epoch",), 2),
                                            (("--quiet",), 0), (("--quiet", "--no-progress"), 0)])
def test_cli_progress_flags(tmp_path, capsys, flags, n_lines):
    assert main([*TRAIN, "--out", str(tmp_path / "r"), *flags]) == 0
    assert len(_epoch_lines(capsys.readouterr().out)) == n_lines
