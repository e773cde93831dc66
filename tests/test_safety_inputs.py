"""No traceback, no hang, for any input (issue 12, class 3).

Every failure of a command is one line, `aevb CMD: error: ...`, exit status 2. Open-ended
inputs are fuzzed with hypothesis: arbitrary bytes and nested structures as a config file,
as a run's config.json / metrics.jsonl / eval.json / sweep.json / marker, and as checkpoint
metadata. Each command runs under a watchdog (SIGALRM), so a hang fails the test instead of
stalling it. FIFOs stand where files are expected: aevb must never open them.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aevb import cli, config, rundir
from aevb.config import ConfigError, make_config
from aevb.report import render_html
from aevb.runs import open_run, read_history
from aevb.rundir import RunDirError
from aevb.serialization import CheckpointError, load_tensors, save_tensors
from aevb.sweep import load_sweep

TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent", "2", "--epochs", "1",
         "--limit", "200", "--batch-size", "50", "--no-progress", "--no-figures"]
FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int = 60):
    """Raise Hang in the main thread if the block runs longer than `seconds`."""
    def fire(*_):
        raise Hang(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run(*argv, seconds: int = 60) -> tuple[int, str]:
    err = io.StringIO()
    with watchdog(seconds), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def one_line_error(rc, err, *words) -> str:
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevb") and ": error: " in lines[0], err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    rc, err = run(*TRAIN, "--out", out)
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cond"
    rc, err = run(*TRAIN, "--conditional", "--out", out)
    assert rc == 0, err
    return out


# ----------------------------------------------------------------------------- config files (hypothesis)
@FUZZ
@given(raw=st.binary(max_size=400))
def test_any_bytes_as_a_config_file_is_a_config_or_one_line_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(raw)
    with watchdog(20):
        try:
            make_config(path)
        except ConfigError as e:
            assert "\n" not in str(e) and len(str(e)) < 2000


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=40)
KEYS = st.sampled_from(list(config.FIELDS)) | st.text(max_size=12)


@FUZZ
@given(doc=st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_structure_as_config_values_is_a_config_or_one_line_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    with watchdog(20):
        try:
            cfg = make_config(path)
        except ConfigError as e:
            assert "\n" not in str(e) and len(str(e)) < 2000
        else:
            assert all(not isinstance(v, float) or np.isfinite(v) for v in cfg.to_dict().values())


HOSTILE = [
    ("hidden: " + "[" * 5000 + "]" * 5000 + "\n", ["nested too deeply"]),
    ("hidden: " + "[" * 40 + "]" * 40 + "\n", ["nested more than 32 levels"]),
    ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
     "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nhidden: *g\n",
     ["more than 100000 values (aliases expanded)"]),
    ("hidden: &a [*a]\n", ["nested more than"]),
    ("1: 2\n", ["key 1 is not a name"]),
    ("null: 2\n", ["key None is not a name"]),
    ("? [a]\n: 3\n", ["not valid YAML"]),
    ("seed: 100000000000000000000000000\n", ["'seed'", "0 to"]),
    ("seed: -1\n", ["'seed'", "0 to"]),
    ("device: meta\n", ["'device'", "meta"]),
    ("threads: 100000000\n", ["'threads'", "at most 1024"]),
    ("sigma: .nan\n", ["'sigma'", "non-finite"]),
    ("limit: 0\n", ["'limit'"]), ("limit: -5\n", ["'limit'"]), ("classes: []\n", ["'classes'"]),
    ("hidden: [100000000]\n", ["GiB", "use smaller hidden"]),
    ("data_dir: \"a\\0b\"\n", ["'data_dir'", "NUL"]),
    ("dataset: " + "x" * 100000 + "\n", ["'dataset'", "4096"]),
]


@pytest.mark.parametrize("text,words", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_configs_are_one_line_errors(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    rc, err = run("train", path, "--out", tmp_path / "r", "--no-progress", seconds=60)
    line = one_line_error(rc, err, *words)
    assert len(line) < 1000  # an expanded value never reaches the message
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- files of a run (hypothesis)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids,
                                                                                max_size=4), max_leaves=30)
CONTENT = st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()),
                    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
                    st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n))
FILES = ["config.json", "metrics.jsonl", "eval.json", ".aevb-run", "sweep.json"]


@FUZZ
@given(name=st.sampled_from(FILES), content=CONTENT)
def test_any_content_in_a_runs_files_is_read_or_refused_in_one_line(run_dir, tmp_path_factory, name, content):
    """What aevb reads from a run directory (open_run, the report's page, sweep.json, the
    marker) with any bytes in one of its files: read, or refused in one line. (The page's
    KeyError / TypeError / ... on a hand-edited config.json or eval.json become one line in
    write_report, checked through the command below.)"""
    d = tmp_path_factory.mktemp("r") / "run"
    shutil.copytree(run_dir, d)
    (d / name).write_bytes(content)
    page_errors = (KeyError, TypeError, ValueError, AttributeError, IndexError)
    with watchdog(30):
        try:
            r = open_run(d, load_model=False)
        except CheckpointError as e:
            assert "\n" not in str(e) and name in str(e)
        else:
            with contextlib.suppress(*page_errors):
                render_html("t", r.config, r.eval, r.history, {})
        assert all(isinstance(h.get("epoch"), int) for h in read_history(d))
        for step in (lambda: load_sweep(d), lambda: rundir.read_marker(d), lambda: rundir.owned(d / "config.json"),
                     lambda: rundir.is_run(d)):
            try:
                step()
            except (CheckpointError, RunDirError) as e:
                assert "\n" not in str(e)


DAMAGED = [
    ("config.json", "[" * 100000 + "]" * 100000), ("config.json", '{"a": ' * 40 + "1" + "}" * 40),
    ("config.json", '{"model_config": [1], "noise": "x"}'), ("eval.json", '{"n": 3, "elbo'),
    ("eval.json", "[" * 100000), ("eval.json", '{"denoising": [1, 2], "log_px": 1}'),
    ("metrics.jsonl", "[" * 100000 + "\n" + '{"epoch": "x"}\n5\n'), ("sweep.json", "{" * 100000),
    (".aevb-run", "[" * 100000), (".aevb-run", '{"kind": "run", "id": "x", "files": ["../../x", "*"]}'),
]


@pytest.mark.parametrize("name,content", DAMAGED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DAMAGED)])
def test_damaged_run_files_through_every_command(run_dir, tmp_path, name, content):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    (d / name).write_text(content)
    def files():
        return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != ".aevb-lock"}
    before = files()
    commands = [["eval", d, "--nll-samples", "0", "--no-progress", "-o", tmp_path / "e.json"],
                ["report", d, "--fast", "--no-tsne", "-o", tmp_path / "r.html"],
                ["plot", d, "curves", "-o", tmp_path / "c.png"], ["plot", d, "latent-sweep", "-o", tmp_path / "s.png"],
                ["sample", d, "-n", "4", "-o", tmp_path / "x.png"],
                ["score", d, "--samples", "2", "--limit", "10", "-o", tmp_path / "s.csv"],
                ["train", "--resume", "--out", d, "--epochs", "2", "--no-progress", "--no-figures"],
                [*TRAIN, "--out", d, "--overwrite"]]
    for argv in commands:
        rc, err = run(*argv)
        if rc != 0:
            one_line_error(rc, err)
        for f in tmp_path.glob("[ecrsx].*"):
            f.unlink()
    if name == ".aevb-run":  # a damaged marker: nothing in the directory was replaced or deleted
        assert files() == before


@FUZZ
@given(meta=JSON)
def test_any_checkpoint_metadata_loads_or_is_one_line_error(run_dir, tmp_path_factory, meta):
    import aevb
    tensors, good = load_tensors(run_dir / "checkpoint.safetensors")
    path = tmp_path_factory.mktemp("ck") / "checkpoint.safetensors"
    for m in ({"model_config": meta}, {**good, "trainer": meta}, meta if isinstance(meta, dict) else {"x": meta}):
        save_tensors(path, tensors, m)
        with watchdog(30):
            try:
                aevb.load(path)
            except CheckpointError as e:
                assert "\n" not in str(e) and str(path) in str(e)


def test_deeply_nested_checkpoint_metadata(run_dir, tmp_path):
    tensors, _ = load_tensors(run_dir / "checkpoint.safetensors")
    path = tmp_path / "c.safetensors"
    from safetensors.torch import save
    path.write_bytes(save({k: v.contiguous() for k, v in tensors.items()},
                          metadata={"json": "[" * 100000 + "]" * 100000}))
    rc, err = run("sample", path, "-o", tmp_path / "s.png")
    one_line_error(rc, err, path)


# ----------------------------------------------------------------------------- FIFOs, devices
def test_fifos_and_devices_are_never_opened(run_dir, tmp_path):
    for name in ("x.npz", "c.yaml", "m.safetensors", "t10k-images-idx3-ubyte"):
        os.mkfifo(tmp_path / name)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "b").mkdir()
    from PIL import Image
    for i, cls in enumerate("aabb"):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "folder" / cls / f"{i}.png")
    os.mkfifo(tmp_path / "folder" / "a" / "pipe.png")
    ck = tmp_path / "run"
    shutil.copytree(run_dir, ck)
    (ck / "checkpoint.safetensors").unlink()
    os.mkfifo(ck / "checkpoint.safetensors")
    cases = [[*TRAIN, "--dataset", f"npz:{tmp_path / 'x.npz'}", "--out", tmp_path / "r1"],
             ["train", tmp_path / "c.yaml"], ["train", "/dev/zero"], ["train", "/dev/stdin"],
             ["sample", tmp_path / "m.safetensors", "-o", tmp_path / "s.png"],
             ["sample", "/dev/zero", "-o", tmp_path / "s.png"],
             ["sample", ck, "-o", tmp_path / "s.png"],
             ["score", run_dir, tmp_path / "x.npz", "-o", tmp_path / "s.csv"],
             ["score", run_dir, tmp_path / "t10k-images-idx3-ubyte", "-o", tmp_path / "s.csv"],
             ["train", "--resume", "--out", ck, "--no-progress"]]
    for argv in cases:
        rc, err = run(*argv, seconds=60)
        one_line_error(rc, err)
    rc, err = run(*TRAIN, "--dataset", f"folder:{tmp_path / 'folder'}", "--image-size", "8",
                  "--channels", "1", "--out", tmp_path / "r2", seconds=120)
    assert rc == 0, err  # the FIFO inside the folder is skipped, never opened


# ----------------------------------------------------------------------------- everything else
def test_hostile_command_lines_are_one_line_errors(run_dir, cond_run, tmp_path):
    import zipfile
    np.savez(tmp_path / "oneside.npz", x_train=np.zeros((10, 8, 8)), x_test=np.zeros((5, 8, 8)),
             y_train=np.zeros(10, int))
    np.savez(tmp_path / "labels99.npz", x_train=np.zeros((10, 8, 8)), x_test=np.zeros((5, 8, 8)),
             y_train=np.zeros(10, int), y_test=np.full(5, 99))
    with zipfile.ZipFile(tmp_path / "bytes.npz", "w") as z:
        z.writestr("x_train.npy", b"not an array")
        z.writestr("x_test", b"raw bytes")
    cases = [
        ([*TRAIN, "--seed", str(10 ** 30), "--out", tmp_path / "r"], ["'seed'"]),
        (["sample", run_dir, "--seed", str(10 ** 30), "-o", tmp_path / "s.png"], ["seed"]),
        ([*TRAIN, "--device", "meta", "--out", tmp_path / "r"], ["meta"]),
        ([*TRAIN, "--device", "mps", "--out", tmp_path / "r"], ["mps"]),
        ([*TRAIN, "--device", "cuda:99", "--out", tmp_path / "r"], ["cuda"]),
        ([*TRAIN, "--dataset", f"npz:{tmp_path / 'oneside.npz'}", "--out", tmp_path / "r"], ["y_test"]),
        ([*TRAIN, "--dataset", f"npz:{tmp_path / 'bytes.npz'}", "--out", tmp_path / "r"], ["not a NumPy array"]),
        (["score", cond_run, tmp_path / "labels99.npz", "-o", tmp_path / "s.csv"], ["99", "0..9"]),
        (["impute", cond_run, tmp_path / "labels99.npz", "-o", tmp_path / "i.png"], ["99", "0..9"]),
        (["plot", cond_run, "manifold", "--label", "12", "-o", tmp_path / "m.png"], ["--label 12"]),
        (["sweep", "--key", "out", "--values", "a,b", "--out", tmp_path / "sw"], ["out"]),
        (["train", "--epochs", "ten"], ["'epochs'"]), (["nonsense"], ["invalid choice"]),
        (["sample"], ["required"]), (["train", "--resume", "--overwrite", "--out", run_dir], ["exclude"]),
        (["eval", run_dir, "--nll-samples", "0", "-o", "/proc/version"], ["/proc/version"]),
        (["sample", run_dir, "-o", tmp_path], ["not a regular file"]),
        (["sample", run_dir, "-o", tmp_path / "x\n\x1b[31m.png", "--nonsense"], ["unrecognized"]),
    ]
    for argv, words in cases:
        rc, err = run(*argv)
        line = one_line_error(rc, err, *words)
        assert line.isprintable(), line
    assert not (tmp_path / "r").exists() and not (tmp_path / "sw").exists()


def test_out_of_memory_and_unexpected_errors_are_one_line(tmp_path, monkeypatch):
    from aevb.models.vae import VAE
    for exc, words, status in ((torch.OutOfMemoryError("CUDA out of memory"), ["out of memory"], 2),
                               (MemoryError(), ["out of memory"], 2),
                               (RuntimeError("DefaultCPUAllocator: can't allocate memory"), ["out of memory"], 2),
                               (ZeroDivisionError("boom"), ["internal error", "please report"], 70)):
        def objective(self, x, y=None, exc=exc, **kw):
            raise exc
        monkeypatch.setattr(VAE, "objective", objective)
        rc, err = run(*TRAIN, "--out", tmp_path / type(exc).__name__)
        assert rc == status and err.count("\n") == 1 and "Traceback" not in err, err
        assert all(w in err for w in words), err


def test_fp16_with_a_diverging_learning_rate(tmp_path):
    rc, err = run(*TRAIN, "--precision", "fp16", "--lr", "1e9", "--out", tmp_path / "r", seconds=120)
    one_line_error(rc, err)
    assert "non-finite" in err or "diverged" in err or "skipped" in err, err


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT at moments spread over a real `python -m aevb train` start (imports, data, model):
    once aevb's code runs, the answer is one line and exit status 130. Python's own start
    (site, before any aevb code) is outside aevb's reach: a traceback there has no aevb frame."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    argv = [sys.executable, "-m", "aevb", *TRAIN[:-2], "--epochs", "100000"]
    procs = [(d, subprocess.Popen([*argv, "--out", str(tmp_path / f"r{i}")], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE), time.monotonic())
             for i, d in enumerate((0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 5.0))]
    for delay, p, t0 in procs:
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        p.send_signal(signal.SIGINT)
    inside = 0
    for delay, p, _ in procs:
        out, err = p.communicate(timeout=120)
        if "Traceback" in err:
            assert "aevb" not in err.replace(" -m aevb", ""), err  # Python's own start-up
            continue
        inside += 1
        # 130, or death by the SIGINT itself (-2: how a shell's 130 looks from Python), seen
        # when the signal lands inside torch's import; either way one line and no traceback
        assert p.returncode in (130, -signal.SIGINT), (delay, p.returncode, err)
        assert "stopped by SIGINT" in out or err.strip().endswith("interrupted"), (delay, out, err)
    assert inside >= 4
