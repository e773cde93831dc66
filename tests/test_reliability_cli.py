"""Reliability of `aevb train` as a process: SIGKILL at random moments loses at most the
epoch in progress and `--resume` ends on the very weights of an uninterrupted run; SIGINT /
SIGTERM save a (mid-epoch) checkpoint and exit cleanly; bad files are one-line errors with
exit code 2 and no traceback.

Every command runs in its own process, forked from a small server that has imported aevb,
torch and sklearn once (a cold `aevb` start costs seconds, dominated by imports), so dozens
of runs and kills fit in a few seconds. The children run `aevb.cli.main(argv)` exactly as
the `aevb` script does; one test also starts the real `python -m aevb`."""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aevb.serialization import CheckpointError, load_tensors

SERVER = r"""
import json, os, resource, signal, sys, traceback
import aevb.cli, aevb.config, aevb.training    # imported once; children start warm
import sklearn.datasets, torch._dynamo, torch.utils.tensorboard, tqdm.auto
# nothing is computed here: a child forked after OpenMP started could hang
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            os.chdir(job["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                f = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            if job.get("fsize"):  # no file may grow past this: writes fail with EFBIG
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
            try:
                rc = aevb.cli.main(job["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
                rc = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


# One intra-op thread per process: on a busy 2-core machine two threads per process make
# every step of these tiny nets many times slower. (The kill test also passes with two.)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


class Forker:
    """Runs `aevb` commands in processes forked from a warm server."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, env=ONE_THREAD)
        self.buf = b""
        assert self._line(120) == "ready"
        self.n = 0

    def _line(self, timeout: float | None) -> str | None:
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "fork server died"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def start(self, argv, fsize: int | None = None) -> int:
        self.n += 1
        self.out, self.err = self.tmp / f"{self.n}.out", self.tmp / f"{self.n}.err"
        job = {"argv": [str(a) for a in argv], "cwd": str(self.tmp), "stdout": str(self.out),
               "stderr": str(self.err), "fsize": fsize}
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        pid = int(self._line(60))
        # never signal pid 0 or below (the whole process group, pytest included)
        assert pid > 0, "fork server out of step: a previous job's exit code was not read"
        return pid

    def wait(self, timeout: float | None = 120) -> int | None:
        """The exit code (negative: killed by that signal), or None if still running."""
        line = self._line(timeout)
        return None if line is None else json.loads(line)

    def run(self, argv, **kw) -> tuple[int, str, str]:
        self.start(argv, **kw)
        rc = self.wait()
        return rc, self.out.read_text(), self.err.read_text()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def aevb_cli(tmp_path_factory):
    f = Forker(tmp_path_factory.mktemp("forked"))
    yield f
    f.close()


# a small run: 8x8 digits, 29 steps per epoch, 6 epochs, well under a second
TRAIN = ["train", "--dataset", "digits", "--hidden", "32", "--latent", "4", "--epochs", "6",
         "--batch-size", "50", "--lr", "3e-3", "--seed", "7", "--no-progress", "--no-figures"]


def resume_cmd(out):
    return ["train", "--resume", "--out", out, "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def reference(aevb_cli, tmp_path_factory):
    """An uninterrupted run: its final checkpoint and its wall time."""
    out = tmp_path_factory.mktemp("ref") / "run"
    t = time.monotonic()
    rc, _, err = aevb_cli.run(TRAIN + ["--out", out])
    assert rc == 0, err
    return out / "checkpoint.safetensors", time.monotonic() - t


def epoch_seconds(ref) -> float:
    """Seconds per epoch of the reference run (training and its evaluation; no start-up)."""
    history = [json.loads(line) for line in (ref.parent / "metrics.jsonl").read_text().splitlines()]
    return history[-1]["seconds"] / len(history)


def assert_same_run(ckpt, ref):
    """Bitwise: model weights, optimizer state, RNG state and per-epoch metrics."""
    (a, ma), (b, mb) = load_tensors(ckpt), load_tensors(ref)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ma["trainer"].pop("history")) == strip(mb["trainer"].pop("history"))
    assert ma["trainer"] == mb["trainer"] and ma["optimizer"] == mb["optimizer"]


def checkpoint_epoch(out: Path) -> int:
    """Epochs saved in the run's checkpoint (-1: none yet); fails on an unreadable one."""
    ckpt = out / "checkpoint.safetensors"
    if not ckpt.exists():
        return -1
    tensors, meta = load_tensors(ckpt)  # raises CheckpointError if damaged
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))
    return meta["trainer"]["epoch"]


def wait_for_new_checkpoint(aevb_cli, out: Path, deadline: float) -> int | None:
    """Wait until the running command replaces the checkpoint (or exits: its code)."""
    def ident():
        try:
            return os.stat(out / "checkpoint.safetensors").st_ino
        except FileNotFoundError:
            return None
    first = ident()
    while time.monotonic() < deadline:
        rc = aevb_cli.wait(timeout=0.002)
        if rc is not None or ident() != first:
            return rc
    return None


def test_sigkill_at_random_moments_loses_at_most_one_epoch_and_resume_is_exact(
        aevb_cli, reference, tmp_path):
    ref, seconds = reference
    rng = random.Random(20240611)
    kills, runs, trials, early = 0, 0, 0, 0
    while kills < 24:
        trials += 1
        out = tmp_path / f"trial{trials}"
        for attempt in range(9):  # up to 8 kills, then let it finish
            before = checkpoint_epoch(out)
            cmd = resume_cmd(out) if (out / "config.json").exists() else TRAIN + ["--out", out]
            pid = aevb_cli.start(cmd)
            runs += 1
            if attempt == 8:
                rc = aevb_cli.wait()
            elif rng.random() < 0.4:  # any moment from the start, imports and data loading included
                rc = aevb_cli.wait(timeout=rng.uniform(0, seconds))
            else:  # a moment within about an epoch after this process wrote a checkpoint
                rc = wait_for_new_checkpoint(aevb_cli, out, deadline=time.monotonic() + 2 * seconds + 5)
                if rc is None:
                    rc = aevb_cli.wait(timeout=rng.uniform(0, 1.5 * seconds / 6))
            if rc is None:  # still running: kill it now, whatever it is doing
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended (and was reaped) in between
                    pass
                rc = aevb_cli.wait()
            if rc == 0:
                break
            assert rc == -signal.SIGKILL, aevb_cli.err.read_text()
            kills += 1
            after = checkpoint_epoch(out)  # the file on disk is always complete and valid
            assert after >= before
            early += after < 0  # killed before the first checkpoint: --resume starts over
            # metrics.jsonl is written just before the checkpoint: at most one epoch is lost
            metrics = out / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            assert len(lines) <= max(after, 0) + 1
        assert rc == 0, aevb_cli.err.read_text()
        assert_same_run(out / "checkpoint.safetensors", ref)
        assert not list(out.glob(".*.tmp"))  # temporaries of killed writes are cleaned up
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 6
    print(f"{kills} SIGKILLs ({early} before any checkpoint) in {runs} runs over {trials} trials; "
          "every trial ended on the reference weights")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_mid_epoch_checkpoint_and_resume_is_exact(aevb_cli, reference, tmp_path, sig):
    ref, _ = reference
    out = tmp_path / "run"
    mid_epoch = 0
    rng = random.Random(sig)
    cmd = TRAIN + ["--out", out]
    for attempt in range(5):
        start = max(checkpoint_epoch(out), 0)
        pid = aevb_cli.start(cmd)
        deadline = time.monotonic() + 60
        while checkpoint_epoch(out) <= start and time.monotonic() < deadline:  # training is under way
            time.sleep(0.002)
        time.sleep(rng.uniform(0.1, 0.6) * epoch_seconds(ref))  # into the next epoch
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # already done
            pass
        rc = aevb_cli.wait()
        out_text, err = aevb_cli.out.read_text(), aevb_cli.err.read_text()
        if rc == 0:  # finished before the signal arrived (a slow moment of the machine): again
            out = tmp_path / f"run{attempt}"
            cmd = TRAIN + ["--out", out]
            continue
        assert rc == 128 + sig, err  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        assert f"stopped by {signal.Signals(sig).name}; checkpoint saved. Continue with: aevb train --resume --out {out}" \
            in out_text
        assert "Traceback" not in err
        _, meta = load_tensors(out / "checkpoint.safetensors")
        mid_epoch += meta["trainer"]["step"] > 0
        cmd = resume_cmd(out)
        if mid_epoch:
            break
    assert mid_epoch, "no signal landed inside an epoch"
    rc, _, err = aevb_cli.run(resume_cmd(out))
    assert rc == 0, err
    assert_same_run(out / "checkpoint.safetensors", ref)


# ----------------------------------------------------------------------------- bad files
def one_line_error(rc, err, *words):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevb "), err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def small_run(aevb_cli, tmp_path_factory):
    """A finished 1-epoch run directory to damage copies of."""
    out = tmp_path_factory.mktemp("small") / "run"
    rc, _, err = aevb_cli.run(TRAIN + ["--epochs", "1", "--out", out])
    assert rc == 0, err
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in (".aevb-run", "config.json", "checkpoint.safetensors", "metrics.jsonl"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_damaged_checkpoints_are_one_line_errors(aevb_cli, small_run, tmp_path):
    good = (small_run / "checkpoint.safetensors").read_bytes()
    rnd = random.Random(5)
    cases = {
        "truncated": good[: len(good) // 2],
        "header-only": good[:100],
        "empty": b"",
        "random-bytes": bytes(rnd.randrange(256) for _ in range(5000)),
        "text": b"this is not a checkpoint\n",
    }
    for name, content in cases.items():
        out = copy_run(small_run, tmp_path / name)
        (out / "checkpoint.safetensors").write_bytes(content)
        rc, _, err = aevb_cli.run(resume_cmd(out))
        one_line_error(rc, err, out / "checkpoint.safetensors", "not a valid safetensors checkpoint")
        rc, _, err = aevb_cli.run(["sample", out, "-n", "4", "-o", tmp_path / "s.png"])
        one_line_error(rc, err, out / "checkpoint.safetensors")
        assert (out / "checkpoint.safetensors").read_bytes() == content  # never overwritten


def test_checkpoint_of_another_model_is_refused_naming_the_file(aevb_cli, small_run, tmp_path):
    other = tmp_path / "other"
    rc, _, err = aevb_cli.run(TRAIN + ["--hidden", "16", "--epochs", "1", "--out", other])
    assert rc == 0, err
    out = copy_run(small_run, tmp_path / "run")
    (out / "checkpoint.safetensors").write_bytes((other / "checkpoint.safetensors").read_bytes())
    rc, _, err = aevb_cli.run(resume_cmd(out))
    one_line_error(rc, err, out / "checkpoint.safetensors", "checkpoint was made for model")
    # the same run resumed with a different model setting: refused naming the setting
    rc, _, err = aevb_cli.run(resume_cmd(small_run) + ["--latent", "8"])
    one_line_error(rc, err, small_run, "latent_dim 4 -> 8", "a resumed run keeps its settings")


class Payload:
    """Unpickling this creates the marker file (as os.system("...") would run a command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_where_a_checkpoint_is_expected_never_run(aevb_cli, small_run, tmp_path):
    import pickle
    marker = tmp_path / "PWNED"
    raw = pickle.dumps({"model": Payload(marker)})
    pickle.loads(raw)  # the payload is live: unpickling it does run the command
    assert marker.exists()
    marker.unlink()
    out = copy_run(small_run, tmp_path / "run")
    (out / "checkpoint.safetensors").write_bytes(raw)
    torch.save({"state_dict": Payload(marker)}, tmp_path / "model.pt")
    rc, _, err = aevb_cli.run(resume_cmd(out))
    one_line_error(rc, err, out / "checkpoint.safetensors", "pickle", "never unpickles")
    rc, _, err = aevb_cli.run(["sample", tmp_path / "model.pt", "-o", tmp_path / "s.png"])
    one_line_error(rc, err, tmp_path / "model.pt", "pickle")
    assert not marker.exists()


def test_run_directory_problems_are_reported_before_training(aevb_cli, small_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = aevb_cli.run(TRAIN + ["--out", blocker / "run"])  # read-only-like: ENOTDIR
    one_line_error(rc, err, blocker / "run", "not writable")
    rc, _, err = aevb_cli.run(TRAIN + ["--out", blocker])
    one_line_error(rc, err, blocker, "is a file")
    # an existing run needs --resume or --overwrite
    before = (small_run / "checkpoint.safetensors").read_bytes()
    rc, _, err = aevb_cli.run(TRAIN + ["--out", small_run])
    one_line_error(rc, err, small_run, "already exists", "--resume", "--overwrite")
    assert (small_run / "checkpoint.safetensors").read_bytes() == before
    # --overwrite deletes run directories only, never a directory of other files
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    rc, _, err = aevb_cli.run(TRAIN + ["--out", mine, "--overwrite"])
    one_line_error(rc, err, mine, "not an aevb run directory")
    assert (mine / "thesis.tex").read_text() == "years of work"
    rc, _, err = aevb_cli.run(["train", "--resume", "--out", tmp_path / "nothing-here"])
    one_line_error(rc, err, tmp_path / "nothing-here", "not found")


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(aevb_cli, small_run, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes the checkpoint write fail with EFBIG, the same
    OSError path as a full disk (ENOSPC)."""
    out = copy_run(small_run, tmp_path / "run")
    before = (out / "checkpoint.safetensors").read_bytes()
    rc, _, err = aevb_cli.run(resume_cmd(out) + ["--epochs", "3"], fsize=len(before) - 1)
    one_line_error(rc, err, out / "checkpoint.safetensors", "cannot write checkpoint",
                   "previous checkpoint is kept")
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not list(out.glob(".*.tmp"))
    rc, _, err = aevb_cli.run(resume_cmd(out) + ["--epochs", "3"])  # space again: it goes on
    assert rc == 0, err
    assert checkpoint_epoch(out) == 3


@pytest.mark.parametrize("text,words", [
    ("epochs: ten\n", ["'epochs'", "expected int"]),
    ("epoch: 3\n", ["unknown config key 'epoch'", "did you mean 'epochs'"]),
    ("hidden: [a, b]\n", ["'hidden'"]),
    ("- a\n- b\n", ["expected a mapping"]),
    ("a: [\n", ["not valid YAML", "line 2"]),
    ("optimizer: adamm\n", ["'optimizer'", "adamm"]),
    ("dataset: nosuchdata\n", ["unknown dataset 'nosuchdata'"]),
    ("hidden: [-5]\n", ["'hidden'"]),
    ("clip_grad: -1\n", ["'clip_grad'"]),
])
def test_bad_configs_are_one_line_errors_naming_the_key(aevb_cli, tmp_path, text, words):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    rc, _, err = aevb_cli.run(["train", cfg, "--out", tmp_path / "run", "--no-progress"])
    one_line_error(rc, err, *words)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_unreadable_config_files(aevb_cli, tmp_path):
    rc, _, err = aevb_cli.run(["train", tmp_path / "missing.yaml"])
    one_line_error(rc, err, "missing.yaml", "not found")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    rc, _, err = aevb_cli.run(["train", tmp_path / "bin.yaml"])
    one_line_error(rc, err, "bin.yaml", "not text")
    rc, _, err = aevb_cli.run(["train", tmp_path])
    one_line_error(rc, err, tmp_path, "cannot read")


def test_real_aevb_process_bad_checkpoint(small_run, tmp_path):
    """The same one-line error from a real `python -m aevb` process (not forked)."""
    out = copy_run(small_run, tmp_path / "run")
    (out / "checkpoint.safetensors").write_bytes(os.urandom(3000))
    p = subprocess.run([sys.executable, "-m", "aevb", "train", "--resume", "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    one_line_error(p.returncode, p.stderr, out / "checkpoint.safetensors", "not a valid safetensors")
    with pytest.raises(CheckpointError):
        load_tensors(out / "checkpoint.safetensors")
