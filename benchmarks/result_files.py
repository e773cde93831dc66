"""Where a benchmark may write a result: a new file, or one that the same benchmark wrote
before, which is replaced (that is how benchmarks/results/*.md are regenerated). A file is the
benchmark's when its text names the benchmark's command (`benchmarks/NAME.py`, as `command`
writes it): every result a benchmark writes does, Markdown in its "Command" line, JSON in its
"command" key and PNG in a text chunk. Any other existing file (a user's notes given to
`--json` by mistake, a folder, a link) is refused before the benchmark starts measuring, with
one line on stderr and exit status 2, and is never replaced. Results are written atomically
(`aevb.serialization.atomic_write`).
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

#: how much of an existing file is read to find the benchmark's name
HEAD = 1 << 20


def command(script: str, argv=None) -> str:
    """The command line that ran benchmarks/`script` (`argv`: its arguments, default sys.argv's),
    which each result records and by which `refusal` knows the benchmark's own files."""
    return " ".join([f"python benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])


def refusal(path, script: str) -> str | None:
    """Why benchmarks/`script` may not write `path`, or None when it may."""
    path = Path(path)
    if not os.path.lexists(path):
        return None if path.name not in ("", ".", "..") else f"{path}: a result must be a file name"
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return f"{path} exists and is not a regular file; choose another output path"
    with open(path, "rb") as f:
        head = f.read(HEAD).decode("utf-8", errors="replace")
    if f"benchmarks/{script}" not in head:
        return (f"{path} exists and was not written by benchmarks/{script}; choose another output path "
                "(a benchmark replaces only its own results)")
    return None


def check(path, script: str) -> Path:
    """`path`, after checking that benchmarks/`script` may write it; else exit 2 with one line."""
    why = refusal(path, script)
    if why:
        print(why, file=sys.stderr)
        raise SystemExit(2)
    return Path(path)


def check_folder(folder, names, script: str) -> Path:
    """`folder` (created), after checking that benchmarks/`script` may write each of `names`
    in it; else exit 2 with one line."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        print(f"{folder} exists and is not a folder; choose another output folder", file=sys.stderr)
        raise SystemExit(2)
    for name in names:
        check(folder / name, script)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(path, content: str | bytes, script: str) -> None:
    """Write `content` to `path` atomically, checked again (the file may have appeared meanwhile)."""
    from aevb.serialization import atomic_write
    path = check(path, script)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, content.encode() if isinstance(content, str) else content)
