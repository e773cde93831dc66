"""Run directories: what aevb may write, replace and delete there, and who may use a run.

A directory that aevb creates for a run (or a sweep) holds `.aevb-run`, a JSON marker with
a random run id, the aevb version and the names of the files aevb writes there (`files`;
a name is added before its file is written). The rules that follow from it:

- aevb deletes or replaces a file only inside a marked directory, and only if the file's
  name is in the marker. Anything else (a user's config.json, dotfiles, subfolders, files
  added to a run directory later) is never touched.
- A run starts only in a new or empty directory or in a marked one: `--out` naming a
  directory that holds other files and no marker is refused with a one-line error naming
  one of them, with or without `--overwrite`; `--resume` needs a marked directory.
- `--overwrite` deletes the files the marker names and starts a new run (a new id) there.
- A killed write leaves `.NAME.XXXXXXXX.tmp` (`serialization.atomic_write`); such a file is
  removed only in a marked directory, only when NAME is one of its own files, and only by
  the process that holds the directory's lock.
- One process at a time: `train` holds an exclusive lock (fcntl.flock on `.aevb-lock`)
  for as long as its `Run` lives; a second process is refused, naming the first one's pid.
- Outputs named with `-o` (or the default ones inside the run directory) are written only if
  they do not exist, or with `--overwrite` if aevb wrote them (`output_file`).
- `--resume` continues the same run: only the settings in RESUMABLE may change; any other
  change is refused naming the keys, and an allowed change is recorded in config.json
  under "resumed".
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
import warnings
import weakref
from pathlib import Path

from .serialization import read_json, short, write_json

MARKER = ".aevb-run"
LOCK = ".aevb-lock"
#: what `train` writes into its run directory (figures and reports are added as written)
RUN_FILES = ("config.json", "checkpoint.safetensors", "metrics.jsonl", "tb/events.out.tfevents.*")
#: files that hold a run (or sweep) itself: never the output of a command
PROTECTED = RUN_FILES + ("sweep.json", ".aevb-run", ".aevb-lock")
#: the only patterns a marker may hold; any other entry is a plain name
PATTERNS = ("tb/events.out.tfevents.*",)
#: config keys that may differ when a run is resumed: how long, where and with what it runs
RESUMABLE = ("epochs", "threads", "device", "out", "data_dir", "compile", "time_limit", "patience")
#: the arguments of `train` recorded in config.json (and compared on resume)
TRAINER_KEYS = ("epochs", "batch_size", "lr", "lr_schedule", "optimizer", "seed", "clip_grad", "warmup_epochs",
                "noise", "device", "precision", "threads", "compile", "time_limit", "validation", "keep_best",
                "patience", "ema")
_TMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp in atomic_write


class RunDirError(ValueError):
    """aevb will not use, replace or delete something; the message names it and the way out."""


# ----------------------------------------------------------------------------- names
def safe_name(text: str, limit: int = 80) -> str:
    """A folder name made from user text (a sweep value, a dataset name): letters, digits and
    ``._+-`` only, no leading dot, at most `limit` characters; a short hash of the text is
    appended whenever anything had to change, so that different texts keep different names."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", str(text)).lstrip(".")
    if name != text or len(name) > limit or not name:
        digest = hashlib.sha256(str(text).encode("utf-8", "replace")).hexdigest()[:8]
        name = f"{name[:limit - 9]}-{digest}" if name else digest
    return name


def child(parent, name: str) -> Path:
    """parent/name, refused unless it stays directly inside `parent` (no '..', no '/', no
    symbolic link leading elsewhere)."""
    parent = Path(parent)
    path = parent / name
    real = Path(os.path.realpath(path))
    if "/" in name or name in ("", ".", "..") or real.parent != Path(os.path.realpath(parent)):
        raise RunDirError(f"{short(name)} would leave {parent}; choose other values")
    return path


# ----------------------------------------------------------------------------- the marker
def _valid_entry(e) -> bool:
    if not isinstance(e, str) or not e or len(e) > 4096 or "\0" in e or e.startswith("/"):
        return False
    parts = e.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return False
    return e in PATTERNS or not any(c in e for c in "*?[")


def read_marker(d) -> dict | None:
    """The marker of directory `d`; None if it has none. A marker that is not one aevb wrote
    (not JSON, wrong fields, paths leaving the directory, wildcards) raises RunDirError."""
    path = Path(d) / MARKER
    if not os.path.lexists(path):
        return None
    m = read_json(path, RunDirError)
    if not (m.get("kind") in ("run", "sweep") and isinstance(m.get("id"), str)
            and isinstance(m.get("files"), list) and all(map(_valid_entry, m["files"]))):
        raise RunDirError(f"{path} is damaged (not a marker aevb wrote), so aevb will not "
                          f"delete or replace anything in {d}; choose another directory")
    return m


def _write_marker(d: Path, kind: str, files, **extra) -> dict:
    from . import __version__
    m = {"kind": kind, "id": uuid.uuid4().hex, "aevb": __version__, "files": list(files),
         "created": datetime.datetime.now().isoformat(timespec="seconds"), **extra}
    with _marker_lock(d):
        write_json(d / MARKER, m)
    return m


@contextlib.contextmanager
def _marker_lock(d: Path, timeout: float = 10.0):
    """A short exclusive lock (flock on the directory itself) around a rewrite of the marker."""
    fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise RunDirError(f"{d}: its marker is locked by another process; try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _matches(rel: str, entries) -> bool:
    parts = rel.split("/")
    return any(len(e.split("/")) == len(parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, e.split("/"))) for e in entries)


def owner(path) -> tuple[Path, str] | None:
    """(the nearest marked directory above `path`, `path` relative to it), or None."""
    path = Path(path)
    full = Path(os.path.realpath(path.parent or ".")) / path.name
    for d in full.parents:
        if os.path.lexists(d / MARKER):
            return d, full.relative_to(d).as_posix()
    return None


def owned(path) -> bool:
    """Whether aevb wrote `path`: it lies in a marked directory whose marker names it."""
    found = owner(path)
    if found is None or found[1] in (MARKER, LOCK):
        return False
    try:
        m = read_marker(found[0])
    except RunDirError:
        return False
    return m is not None and _matches(found[1], m["files"])


def claim(path) -> None:
    """Add `path` to the marker of the marked directory it lies in (if any), before it is
    written, so that aevb may replace or delete it later."""
    found = owner(path)
    if found is None:
        return
    d, rel = found
    with _marker_lock(d):
        m = read_marker(d)
        if m is not None and not _matches(rel, m["files"]) and _valid_entry(rel):
            m["files"].append(rel)
            write_json(d / MARKER, m)


def output_file(path, overwrite: bool = False) -> Path:
    """Check that a command may write its output to `path`, and claim it: a new file (its
    folders are created), or, with `overwrite`, an existing regular file that aevb wrote
    (`owned`). Anything else raises RunDirError naming the file and the way out."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise RunDirError(f"{path}: an output must be a file name")
    found = owner(path)
    if found and _matches(found[1], PROTECTED):
        raise RunDirError(f"{path} holds aevb's run (or sweep) in {found[0]}, it is not an output; "
                          "choose another output with -o")
    if os.path.lexists(path):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise RunDirError(f"{path} exists and is not a regular file; choose another output with -o")
        if not overwrite:
            raise RunDirError(f"{path} exists; pass --overwrite to replace it, or choose another "
                              "output with -o")
        if not owned(path):
            raise RunDirError(f"{path} exists and aevb did not write it (only files named in a run "
                              "directory's .aevb-run are replaced); choose another output with -o")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"{path}: cannot create its folder ({e.strerror})") from None
    claim(path)
    return path


# ----------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive lock on a run (or sweep) directory: flock on DIR/.aevb-lock, held until
    `release` or until this object is garbage-collected (or the process ends)."""

    _held: "weakref.WeakValueDictionary[str, RunLock]" = weakref.WeakValueDictionary()

    def __init__(self, d: Path):
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        try:
            self.fd = os.open(d / LOCK, flags, 0o644)
        except OSError as e:
            raise RunDirError(f"run directory {d} is not writable ({e.strerror}); choose another "
                              "with --out") from None
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise RunDirError(f"{d / LOCK} is not a regular file; choose another --out")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"{d}: cannot lock it ({e.strerror})") from None
            raise RunDirError(f"{d} is in use by another aevb process (pid {pid if pid.isdigit() else '?'}); wait "
                              "for it to end, or choose another directory") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        self._finalizer = weakref.finalize(self, os.close, self.fd)

    def release(self) -> None:
        self._finalizer()

    @classmethod
    def acquire(cls, d) -> "RunLock":
        """The lock of directory `d`; the same object if this process holds it already
        (flock locks of one file opened twice would exclude each other)."""
        key = os.path.realpath(d)
        lock = cls._held.get(key)
        if lock is None or not lock._finalizer.alive:
            lock = cls._held[key] = cls(Path(d))
        return lock


# ----------------------------------------------------------------------------- cleaning
def _files(d: Path):
    """(relative posix path, path) of every file below `d`; symbolic links to folders are
    not followed."""
    for root, dirs, files in os.walk(d):
        for f in files:
            p = Path(root) / f
            yield p.relative_to(d).as_posix(), p


def _clean(d: Path, marker: dict, everything: bool) -> None:
    """Remove the stale temporaries of aevb's own files and, with `everything`, the files the
    marker names (the marker and lock stay). Only under the directory's lock."""
    for rel, p in list(_files(d)):
        if rel in (MARKER, LOCK):
            continue
        m = _TMP.match(p.name)
        own_tmp = m is not None and (m["name"] == MARKER or _matches(
            str(Path(rel).parent / m["name"]).removeprefix("./"), marker["files"]))
        if own_tmp or (everything and _matches(rel, marker["files"])):
            p.unlink(missing_ok=True)


def _foreign(d: Path) -> list[str]:
    """The entries of unmarked directory `d` that are not leftovers of aevb creating it."""
    return sorted(n for n in os.listdir(d) if n != LOCK and not (
        _TMP.match(n) and _TMP.match(n)["name"] == MARKER))


def _check_usable(d: Path, resume: bool, kind: str = "run") -> None:
    """Refuse, before anything is created, a directory aevb may not use."""
    if os.path.lexists(d) and not d.is_dir():
        raise RunDirError(f"run directory {d} is a file; choose another --out")
    if not d.exists():
        if resume:
            raise RunDirError(f"--resume: {d} is not an aevb run directory (.aevb-run and "
                              "config.json not found); start a new run without --resume")
        return
    try:
        marker = read_marker(d)
        other = _foreign(d) if marker is None else []
    except OSError as e:
        raise RunDirError(f"run directory {d} cannot be read ({e.strerror}); choose another --out") from None
    if marker is None and (other or resume):
        what = f"it holds {short(other[0])}" if other else "it is empty"
        if resume:
            raise RunDirError(f"--resume: {d} is not an aevb run directory (no .aevb-run marker; "
                              f"{what}); start a new run in a new or empty directory")
        raise RunDirError(f"{d} is not empty and not an aevb run directory ({what}); aevb starts "
                          "a run only in a new or empty directory: choose another --out")
    if marker is not None and marker["kind"] != kind:
        raise RunDirError(f"{d} is an aevb {marker['kind']} directory, not a {kind} directory; "
                          "choose another --out")


# ----------------------------------------------------------------------------- train's entry point
def prepare(out, config: dict, model, *, resume: bool, overwrite: bool, ctx=None):
    """Make `out` ready for `train` (the only call it makes here) -> (Path, RunLock or None).

    Rank 0 checks and claims the directory (see the module docstring), takes its lock,
    removes stale temporaries, and writes config.json (`config` and the model's config) for
    a new run, or compares it with the run's for `resume` (a run killed before its first
    checkpoint starts again from the beginning). Other ranks wait at a barrier."""
    from . import distributed
    ctx = ctx or distributed.Context()
    d, lock = Path(out), None
    if ctx.main:
        lock = _create_and_lock(d, resume, "run")
        try:
            _check_space(d, need=4 * sum(p.numel() * p.element_size() for p in model.parameters()))
            _start(d, {**config, "model_config": model.full_config()}, resume, overwrite)
        except BaseException:
            lock.release()
            raise
    distributed.barrier(ctx)
    return d, lock


def _start(d: Path, config: dict, resume: bool, overwrite: bool) -> None:
    marker = read_marker(d)  # again, now under the lock
    if marker is None and resume:
        raise RunDirError(f"--resume: {d} is not an aevb run directory (no .aevb-run marker)")
    if marker is None:
        if _foreign(d):  # filled by someone else since `_check_usable`
            raise RunDirError(f"{d} is not empty and not an aevb run directory; choose another --out")
        marker = _write_marker(d, "run", RUN_FILES)
    elif resume:
        _clean(d, marker, everything=False)
        if (d / "checkpoint.safetensors").exists():
            return _continue(d, config)
        if os.path.lexists(d / "config.json"):
            changes(d, config)  # refuses a changed run even before its first checkpoint
        warnings.warn(f"--resume: no checkpoint in {d} yet (the run stopped during its first "
                      "epoch); starting it from the beginning")
        _clean(d, marker, everything=True)
    elif any(_matches(rel, marker["files"]) for rel, _ in _files(d)):
        if not overwrite:
            raise RunDirError(f"run directory {d} already exists; pass --resume to continue it "
                              "or --overwrite to replace it")
        _clean(d, marker, everything=True)
        marker = _write_marker(d, "run", RUN_FILES)
    else:
        _clean(d, marker, everything=False)
    write_json(d / "config.json", config)


def _check_space(d: Path, need: int) -> None:
    try:  # the write probe: named like a temporary of the marker, so a kill leaves nothing foreign
        fd, probe = tempfile.mkstemp(prefix=f".{MARKER}.", suffix=".tmp", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"run directory {d} is not writable ({e.strerror}); choose another "
                          "with --out") from None
    need += 1 << 20
    free = shutil.disk_usage(d).free
    if free < need:
        raise RunDirError(f"only {free / 2**20:.1f} MiB free at {d}, a checkpoint needs about "
                          f"{need / 2**20:.1f} MiB; free some space or choose another --out")


# ----------------------------------------------------------------------------- resume


def _flat(config: dict) -> dict:
    """config with the model's config spread out as model_config.KEY; JSON types only."""
    flat = json.loads(json.dumps({k: v for k, v in config.items() if k not in ("model_config", "resumed")}))
    model = config.get("model_config")
    for k, v in (model.items() if isinstance(model, dict) else [("", model)]):
        flat[f"model_config.{k}".rstrip(".")] = json.loads(json.dumps(v))
    return flat


def changes(d: Path, config: dict) -> dict[str, tuple]:
    """The settings of `config` that differ from the run's config.json: {key: (old, new)}.
    Only keys that both name count: a key `config` leaves out keeps the run's value (a
    Python caller passes no data settings), and a key the run's config.json lacks was added
    by a later aevb version (an older run's default). Refuses (RunDirError naming them) any
    change outside RESUMABLE."""
    old, new = _flat(read_json(d / "config.json", RunDirError)), _flat(config)
    diff = {k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]}
    if "model_config" not in config:  # a caller that knows no model (a sweep checking a run)
        diff = {k: v for k, v in diff.items() if not k.startswith("model_config")}
    diff = {k: v for k, v in diff.items() if k.removeprefix("model_config.") == k or k[13:] not in diff}
    bad = {k: v for k, v in diff.items() if k not in RESUMABLE}
    if bad:
        listed = ", ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in list(bad.items())[:6])
        raise RunDirError(f"--resume: {d} is a run with other settings ({listed}); a resumed run "
                          f"keeps its settings (only {', '.join(RESUMABLE)} may change): drop "
                          "those settings, or start a new run with another --out or --overwrite")
    return diff


def _continue(d: Path, config: dict) -> None:
    """Resume: refuse changed settings, record the allowed ones in config.json."""
    diff = changes(d, config)
    if not diff:
        return
    from . import __version__
    old = read_json(d / "config.json", RunDirError)
    history = old.get("resumed") if isinstance(old.get("resumed"), list) else []
    entry = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "aevb": __version__,
             "changed": {k: [a, b] for k, (a, b) in diff.items()}}
    write_json(d / "config.json", {**config, "resumed": history + [entry]})


def check_run(d) -> None:
    """Refuse (RunDirError saying why) a `d` that is not a run directory to resume."""
    _check_usable(Path(d), resume=True)


def is_run(d) -> bool:
    """Whether `d` is a directory that aevb marked as a run (a damaged marker: no)."""
    try:
        m = read_marker(d) if Path(d).is_dir() else None
    except RunDirError:
        return False
    return m is not None and m["kind"] == "run"


# ----------------------------------------------------------------------------- sweeps
SWEEP_FILES = ("sweep.json", "samples.png", "tradeoff.png")


def _create_and_lock(d: Path, resume: bool, kind: str) -> "RunLock":
    """Check that aevb may use `d` as a `kind` directory, create it and take its lock."""
    _check_usable(d, resume, kind)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{kind} directory {d} is not writable ({e.strerror}); choose another "
                          "with --out") from None
    return RunLock.acquire(d)


def prepare_sweep(out, key: str, overwrite: bool) -> RunLock:
    """Make sweep directory `out` ready and lock it: new, empty, or a sweep over the same
    `key` (continued); a sweep over another key is replaced only with `overwrite` (its
    sweep.json and figures; its runs stay)."""
    d = Path(out)
    lock = _create_and_lock(d, False, "sweep")
    marker = read_marker(d)
    if marker is not None and marker.get("key") != key:
        if not overwrite:
            lock.release()
            raise RunDirError(f"{d} holds a sweep over {short(marker.get('key'))}, not {key}; pass "
                              "--overwrite to replace its sweep.json and figures, or choose another --out")
        _clean(d, marker, everything=True)
        marker = None
    if marker is None:
        marker = _write_marker(d, "sweep", SWEEP_FILES, key=key)
    _clean(d, marker, everything=False)
    return lock
