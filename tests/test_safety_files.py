"""aevb never touches a file that is not its own (issue 12, classes 1 and 2).

- Class 1, data loss: a tree of a user's files survives every command with every flag, byte
  for byte; `--overwrite` deletes only what the run's marker names (hypothesis: arbitrary
  directory contents); run names from sweep values stay inside --out; stale temporaries are
  removed only in a marked directory; a second process on a run is refused (a lock).
- Class 2, resume is the same run: changed settings are refused naming them, allowed ones
  recorded in config.json; a changed optimizer is a settings change, not a damaged file; a
  sweep killed at any moment goes on with the same command.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aevb
from aevb import cli, data, rundir
from aevb.models import VAE
from aevb.rundir import RunDirError

TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent", "2", "--epochs", "1",
         "--limit", "200", "--batch-size", "50", "--no-progress", "--no-figures"]


def main(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(*TRAIN, "--out", out) == 0
    return out


def snapshot(root: Path) -> dict:
    """Every entry below `root` (symbolic links not followed): bytes of files, targets of
    links, kinds of anything else; directories too."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            key = p.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISREG(mode):
                out[key] = ("file", p.read_bytes())
            else:
                out[key] = ("dir" if stat.S_ISDIR(mode) else "other", None)
    return out


def user_tree(root: Path) -> Path:
    """A project folder of someone else's files, named like aevb's outputs on purpose."""
    root.mkdir(parents=True)
    files = {"config.json": b'{"my": "project settings"}\n', "metrics.jsonl": b'{"epoch": 1}\n',
             "checkpoint.safetensors": b"not aevb's", "samples.png": b"my picture",
             "scores.csv": b"a,b\n", "impute.png": b"\x89PNG mine", "eval.json": b"{}",
             "report.html": b"<p>mine</p>", "sweep.json": b'{"key": "x"}', "tradeoff.png": b"t",
             ".hidden": b"secret", ".x.tmp": b"tmp", ".config.json.abcd1234.tmp": b"looks like aevb's",
             "notes.txt": b"years of work", "sub/inner.txt": b"inner", "sub/config.json": b"{}",
             "figures/samples.png": b"my figure", "tb/events.out.tfevents.1.host": b"my events"}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root.parent / "outside.txt").write_bytes(b"outside")
    os.symlink("../outside.txt", root / "link.txt")
    os.mkfifo(root / "pipe")
    return root


# ----------------------------------------------------------------------------- class 1: the tree test
def test_a_users_tree_survives_every_command_with_every_flag(run_dir, tmp_path, monkeypatch, capsys):
    """Every command, pointed at a folder of someone else's files (as --out, as -o, as the
    current directory), changes none of them; a run directory holding the user's files too
    keeps those through --overwrite and --resume."""
    user = user_tree(tmp_path / "project")
    before = snapshot(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.chdir(user)
    refused = []
    for flags in ([], ["--overwrite"], ["--resume"]):
        refused += [[*TRAIN, "--out", user, *flags], [*TRAIN, "--out", ".", *flags]]
    refused += [["train", "--resume"], ["train", "--resume", "--out", "."],
                ["sweep", "--latent", "1,2", "--out", user, "--set", "hidden=8", "--limit", "200",
                 "--epochs", "1", "--no-progress"],
                ["sweep", "--latent", "1,2", "--out", ".", "--overwrite", "--epochs", "1", "--no-progress"],
                ["plot", user, "latent-sweep"], ["plot", user, "latent-sweep", "--overwrite"],
                ["eval", user, "--nll-samples", "0"], ["report", user, "--overwrite"],
                ["sample", user], ["sample", "checkpoint.safetensors", "--overwrite"]]
    outputs = {"sample": "samples.png", "score": "scores.csv", "impute": "impute.png",
               "eval": "eval.json", "report": "report.html"}
    quick = {"score": ["--samples", "2", "--limit", "20"], "impute": ["-n", "4", "--iterations", "2"],
             "eval": ["--nll-samples", "0", "--no-progress"], "report": ["--fast", "--no-tsne"],
             "sample": ["-n", "4"]}
    for cmd, name in outputs.items():
        for flags in ([], ["--overwrite"]):
            refused.append([cmd, run, "-o", user / name, *quick[cmd], *flags])
    for flags in ([], ["--overwrite"]):
        refused.append(["plot", run, "samples", "-o", user / "samples.png", *flags])
        refused.append(["sample", run, "--gmm", "2", "-o", user / "samples.png", *flags])
    for argv in refused:
        assert main(*argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, (argv, err)
    # allowed: the default outputs go into the run directory, the listing prints
    for cmd, name in outputs.items():
        assert main(cmd, run, *quick[cmd]) == 0, cmd
        assert (run / name).is_file()
    assert main("plot", run, "curves") == 2  # the report drew it: replaced only with --overwrite
    assert main("plot", run, "curves", "--overwrite") == 0 and (run / "figures" / "curves.png").is_file()
    assert main("datasets") == 0
    assert snapshot(tmp_path / "project") == {k[len("project/"):]: v for k, v in before.items()
                                              if k.startswith("project/")}
    assert not (user / "runs").exists()

    # a run directory that holds the user's files too: --overwrite and --resume keep them
    mine = {"notes.txt": b"mine", ".x.tmp": b"tmp", ".notes.txt.abcd1234.tmp": b"not aevb's",
            "sub/keep.txt": b"keep", "figures/mine.png": b"mine"}
    for name, content in mine.items():
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(content)
    (run / ".config.json.abcd1234.tmp").write_bytes(b"a killed write of aevb's config.json")
    assert main(*TRAIN, "--out", run, "--overwrite") == 0
    assert not (run / "eval.json").exists() and not (run / "samples.png").exists()  # aevb's: gone
    assert not (run / ".config.json.abcd1234.tmp").exists()  # aevb's stale temporary: gone
    assert main("train", "--resume", "--out", run, "--epochs", "2", "--no-progress") == 0
    assert (run / "report.html").is_file()
    for name, content in mine.items():
        assert (run / name).read_bytes() == content, name
    assert snapshot(tmp_path / "project") == {k[len("project/"):]: v for k, v in before.items()
                                              if k.startswith("project/")}
    assert (tmp_path / "outside.txt").read_bytes() == b"outside"


def test_an_explicit_new_output_in_a_users_folder_adds_exactly_that_file(run_dir, tmp_path):
    user = user_tree(tmp_path / "project")
    before = snapshot(user)
    assert main("sample", run_dir, "-n", "4", "-o", user / "new.png") == 0
    after = snapshot(user)
    assert set(after) - set(before) == {"new.png"}
    assert {k: after[k] for k in before} == before
    assert main("sample", run_dir, "-n", "4", "-o", user / "new.png", "--overwrite") == 2  # not in a run


# ----------------------------------------------------------------------------- class 1: --overwrite, hypothesis
NAMES = st.sampled_from(["config.json", "metrics.jsonl", "checkpoint.safetensors", "eval.json",
                         "samples.png", "notes.txt", ".hidden", ".x.tmp", ".config.json.abcd1234.tmp",
                         ".notes.txt.abcd1234.tmp", "..aevb-run.abcd1234.tmp", "tb/events.out.tfevents.9",
                         "tb/mine", "figures/samples.png", "sub/config.json", "a b", "é", "-rf"])
TREES = st.dictionaries(NAMES, st.binary(max_size=64), max_size=8)
TINY = VAE((1, 8, 8), 2, hidden=(4,))
OWN = {"config.json", "metrics.jsonl", "checkpoint.safetensors", "tb/events.out.tfevents.9"}


def _plant(d: Path, tree: dict) -> None:
    for name, content in tree.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(content)


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(tree=TREES, marked=st.booleans())
def test_overwrite_deletes_only_what_the_marker_names(tree, marked):
    """An unmarked folder with anything in it is refused and left as it was (the one
    exception: a temporary of the marker itself, what a kill while aevb created the folder
    leaves); in a marked run directory --overwrite removes the files its marker names (and
    stale temporaries of those) and nothing else."""
    d = Path(tempfile.mkdtemp()) / "run"
    d.mkdir()
    try:
        if marked:
            rundir._write_marker(d, "run", rundir.RUN_FILES)
        _plant(d, tree)
        before = snapshot(d)
        if not marked and set(tree) - {"..aevb-run.abcd1234.tmp"}:
            with pytest.raises(RunDirError, match="not an aevb run directory"):
                rundir.prepare(d, {}, TINY, resume=False, overwrite=True)
            assert snapshot(d) == before
            return
        lock = rundir.prepare(d, {"x": 1}, TINY, resume=False, overwrite=True)[1]
        lock.release()
        after = snapshot(d)
        gone = {k for k in before if k not in after}
        expected = {k for k in tree if k in OWN or k == "..aevb-run.abcd1234.tmp"
                    or (marked and k == ".config.json.abcd1234.tmp")}
        assert gone == expected - {"config.json"}
        assert all(after[k] == before[k] for k in before if k in after and k != "config.json"
                   and k != rundir.MARKER)
        assert json.loads((d / "config.json").read_text())["x"] == 1
    finally:
        shutil.rmtree(d.parent)


def test_stale_temporaries_are_removed_only_in_a_marked_run(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / ".config.json.abcd1234.tmp").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"holds '\.config\.json\.abcd1234\.tmp'"):
        rundir.prepare(d, {}, TINY, resume=False, overwrite=True)
    assert (d / ".config.json.abcd1234.tmp").exists()


# ----------------------------------------------------------------------------- class 1: names, outputs
@pytest.mark.parametrize("value", ["/../../x", "../x", "a/b", "..", ".", "x\ny", "\x1b[31m", "a" * 5000,
                                   "/etc", "~", "-rf", ""])
def test_sweep_run_names_stay_inside_the_sweep(tmp_path, value):
    from aevb.sweep import run_dir
    d = run_dir(tmp_path, "data_dir", value)
    assert d.parent == tmp_path and len(d.name) <= 80
    assert d.name not in (".", "..") and not d.name.startswith(".") and "/" not in d.name
    assert all(c.isalnum() or c in "._+-" for c in d.name)
    assert run_dir(tmp_path, "data_dir", value + "z") != d  # different values, different folders


def test_a_sweep_run_folder_that_is_a_link_elsewhere_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "sweep").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "sweep" / "latent_dim-2")
    with pytest.raises(RunDirError, match="would leave"):
        rundir.child(tmp_path / "sweep", "latent_dim-2")


def test_sweep_refuses_out_and_another_sweeps_folder(tmp_path, capsys):
    base = ["--set", "hidden=8", "--limit", "200", "--epochs", "1", "--no-progress"]
    assert main("sweep", "--key", "out", "--values", "a,b", "--out", tmp_path / "s", *base) == 2
    assert main("sweep", "--latent", "2", "--out", tmp_path / "s", "--set", "out=/tmp", *base) == 2
    assert not (tmp_path / "s").exists()
    assert main("sweep", "--latent", "1,2", "--out", tmp_path / "s", *base) == 0
    files = snapshot(tmp_path / "s")
    capsys.readouterr()
    assert main("sweep", "--beta", "1,2", "--out", tmp_path / "s", *base) == 2
    assert "holds a sweep over 'latent_dim'" in capsys.readouterr().err
    assert snapshot(tmp_path / "s") == files
    assert main("plot", tmp_path / "s", "latent-sweep") == 2  # samples.png exists
    assert main("plot", tmp_path / "s", "latent-sweep", "--overwrite") == 0


def test_outputs_default_to_the_run_and_need_overwrite(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.chdir(tmp_path)
    assert main("sample", run, "-n", "4") == 0 and (run / "samples.png").exists()
    first = (run / "samples.png").read_bytes()
    assert main("sample", run, "-n", "4", "--seed", "1") == 2
    assert (run / "samples.png").read_bytes() == first
    assert main("sample", run, "-n", "4", "--seed", "1", "--overwrite") == 0
    assert (run / "samples.png").read_bytes() != first
    assert main("sample", run, "-n", "4", "-o", run / "mine.png") == 0  # claimed: aevb's now
    assert "mine.png" in json.loads((run / rundir.MARKER).read_text())["files"]
    assert main("sample", run, "-n", "4", "-o", run / "mine.png", "--overwrite") == 0
    for name in ("checkpoint.safetensors", "config.json", "metrics.jsonl", ".aevb-run", ".aevb-lock"):
        before = (run / name).read_bytes()
        assert main("sample", run, "-n", "4", "-o", run / name, "--overwrite") == 2  # the run itself
        assert (run / name).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing in the current directory


# ----------------------------------------------------------------------------- class 1: the lock
def test_a_second_process_on_a_run_is_refused(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from aevb.rundir import RunLock; "
                               "l = RunLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        for flags in (["--resume", "--epochs", "2"], ["--overwrite"]):
            argv = [*TRAIN, "--out", run, *flags] if "--overwrite" in flags else \
                ["train", "--out", run, "--no-progress", *flags]
            assert main(*argv) == 2
            err = capsys.readouterr().err
            assert f"in use by another aevb process (pid {holder.pid})" in err, err
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    assert main("train", "--resume", "--out", run, "--epochs", "2", "--no-progress", "--no-figures") == 0


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    ds = data.load("digits", limit=100)
    r = aevb.train(VAE((1, 8, 8), 2, hidden=(4,)), ds, epochs=1, out=tmp_path / "r", progress=False)
    assert r.lock is not None
    code = "import sys; from aevb.rundir import RunLock; RunLock.acquire(sys.argv[1])"
    held = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True)
    assert held.returncode != 0 and b"in use by another aevb process" in held.stderr
    del r
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")]).returncode == 0


# ----------------------------------------------------------------------------- class 2: resume
@pytest.mark.parametrize("flag,value", [("--batch-size", "100"), ("--seed", "5"), ("--binarize", "static"),
                                        ("--precision", "bf16"), ("--warmup-epochs", "1"), ("--noise", "0.1"),
                                        ("--dataset", "npz:{npz}"), ("--lr", "0.01"), ("--optimizer", "sgd"),
                                        ("--limit", "100"), ("--classes", "1,2"), ("--latent", "3"),
                                        ("--clip-grad", "1")])
def test_resume_refuses_changed_settings_naming_them(run_dir, tmp_path, capsys, flag, value):
    import numpy as np
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8), np.float32), x_test=np.zeros((4, 8, 8), np.float32))
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = snapshot(run)
    key = flag[2:].replace("-", "_").replace("latent", "latent_dim")
    assert main("train", "--resume", "--out", run, flag, value.format(npz=tmp_path / "d.npz"),
                "--no-progress", "--no-figures") == 2
    err = capsys.readouterr().err
    assert f"{key} " in err and "a resumed run keeps its settings" in err and "damaged" not in err, err
    assert snapshot(run) == before


def test_resume_records_allowed_changes(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main("train", "--resume", "--out", run, "--epochs", "2", "--threads", "1",
                "--device", "cpu", "--no-progress", "--no-figures") == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["threads"] == 1 and cfg["device"] == "cpu"
    changed = cfg["resumed"][-1]["changed"]
    assert changed["epochs"] == [1, 2] and changed["device"] == ["auto", "cpu"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_library_resume_with_another_optimizer_is_a_settings_change(tmp_path):
    ds = data.load("digits", limit=100)
    aevb.train(VAE((1, 8, 8), 2, hidden=(4,)), ds, epochs=1, out=tmp_path / "r", progress=False)
    for kw, word in (({"optimizer": "sgd"}, "optimizer 'adam' -> 'sgd'"), ({"lr": 0.5}, "lr 0.001 -> 0.5")):
        with pytest.raises(RunDirError, match=word) as e:
            aevb.train(VAE((1, 8, 8), 2, hidden=(4,)), ds, epochs=2, out=tmp_path / "r", resume=True,
                       progress=False, **kw)
        assert "damaged" not in str(e.value)
    with pytest.raises(RunDirError, match="model_config.latent_dim 2 -> 3"):
        aevb.train(VAE((1, 8, 8), 3, hidden=(4,)), ds, epochs=2, out=tmp_path / "r", resume=True, progress=False)


SWEEP = ["sweep", "--latent", "1,2", "--set", "hidden=8", "--limit", "200", "--epochs", "2",
         "--set", "batch_size=50", "--no-progress"]


def _in_first_epoch(out: Path) -> bool:
    return any(rundir.is_run(d) and not (d / "checkpoint.safetensors").exists()
               for d in out.glob("latent_dim-*"))


def test_a_sweep_killed_at_any_moment_goes_on_with_the_same_command(tmp_path):
    """SIGKILL a sweep at random moments and, on purpose, in a run's first epoch (before its
    first checkpoint); the same command, run again, always finishes, with every run
    complete and every epoch trained once."""
    import signal

    from test_reliability_cli import Forker  # a warm fork server: a kill costs no start-up
    forker = Forker(tmp_path)
    rnd = random.Random(12)
    out = tmp_path / "sweep"
    argv = [*SWEEP, "--out", out]
    early = kills = 0
    try:
        for i in range(8):
            pid = forker.start(argv)
            rc, end = None, time.monotonic() + (30 if i % 2 == 0 else rnd.uniform(0, 1.5))
            while rc is None and time.monotonic() < end and not (i % 2 == 0 and _in_first_epoch(out)):
                rc = forker.wait(0.0005)  # even i: until a run exists without a checkpoint
            if rc is None:
                with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                    os.kill(pid, signal.SIGKILL)
                early += _in_first_epoch(out)
                rc = forker.wait()
                kills += 1
            assert rc in (0, -signal.SIGKILL), forker.err.read_text()
        rc, _, err = forker.run(argv)
        assert rc == 0, err
    finally:
        forker.close()
    assert kills >= 4 and early >= 2, (kills, early)
    info = json.loads((out / "sweep.json").read_text())
    assert [r["dir"] for r in info["runs"]] == ["latent_dim-1", "latent_dim-2"]
    for r in info["runs"]:
        lines = (out / r["dir"] / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
        assert (out / r["dir"] / "report.html").exists()
    assert (out / "samples.png").exists()


def test_every_file_a_command_writes_is_written_atomically(run_dir, tmp_path, monkeypatch):
    """Every file that train, sweep, sample, score, impute, eval, plot and report leave behind
    went through serialization.atomic_write (temporary + rename), except TensorBoard's
    streamed event files and the lock."""
    import aevb.serialization
    import aevb.training
    real, written = aevb.serialization.atomic_write, set()

    def recording(path, data):
        written.add(Path(path).resolve())
        return real(path, data)
    monkeypatch.setattr(aevb.serialization, "atomic_write", recording)
    monkeypatch.setattr(aevb.training, "atomic_write", recording)
    out = tmp_path / "out"
    assert main(*TRAIN[:-1], "--out", tmp_path / "t") == 0  # with its figures and report
    assert main("sweep", "--latent", "1,2", "--out", tmp_path / "sw", "--set", "hidden=8", "--limit", "200",
                "--epochs", "1", "--no-progress") == 0
    for argv in (["sample", run_dir, "-n", "4", "-o", out / "s.png"],
                 ["score", run_dir, "--samples", "2", "--limit", "10", "-o", out / "s.csv"],
                 ["impute", run_dir, "-n", "2", "--iterations", "2", "-o", out / "i.png"],
                 ["eval", run_dir, "--nll-samples", "0", "--no-progress", "-o", out / "e.json"],
                 ["plot", run_dir, "samples", "-o", out / "p.png"],
                 ["report", run_dir, "--fast", "--no-tsne", "-o", out / "r.html"]):
        assert main(*argv) == 0, argv
    left = [p.resolve() for d in (out, tmp_path / "t", tmp_path / "sw") for p in d.rglob("*")
            if p.is_file() and p.name != rundir.LOCK and not p.name.startswith("events.out.tfevents")]
    assert len(left) > 30
    assert [p for p in left if p not in written] == []
