"""The benchmarks never replace a file they did not write (benchmarks/result_files.py): an
existing file that does not name the benchmark, a folder or a link given as an output is
refused before anything is measured, in one line with exit status 2, and left as it was; a
result the benchmark wrote before is replaced (that is how benchmarks/results/ is regenerated)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import result_files  # noqa: E402


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def refused(p: subprocess.CompletedProcess, *words) -> bool:
    lines = p.stderr.strip().splitlines()
    return p.returncode == 2 and "Traceback" not in p.stderr and all(w in lines[-1] for w in words)


@pytest.mark.parametrize("script, flag", [("floor.py", "--json"), ("speed.py", "--json"),
                                          ("gpu_peers.py", "--json"), ("model_zoo.py", "--out"),
                                          ("quality_seeds.py", "--out"), ("peers/plain_loop.py", "--json"),
                                          ("peers/examples_style.py", "--json")])
def test_a_users_file_given_as_the_output_is_refused_and_kept(tmp_path, script, flag):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, which mention benchmarks/ but not this script\n")
    inputs = []
    if script == "quality_seeds.py":  # it reads its inputs first: give it a readable one
        inputs = [tmp_path / "run.json"]
        inputs[0].write_text('{"command": "python benchmarks/quality.py", "results": {}}')
    p = run(script, *inputs, flag, notes)
    assert refused(p, str(notes), f"not written by benchmarks/{script}"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert notes.read_text().startswith("my notes")


def test_quality_refuses_a_folder_holding_a_users_result_files(tmp_path):
    (tmp_path / "quality.md").write_text("my own quality notes\n")
    p = run("quality.py", "--models", "aevb-vae", "--out", tmp_path)
    assert refused(p, "quality.md", "not written by benchmarks/quality.py"), p.stderr
    assert (tmp_path / "quality.md").read_text() == "my own quality notes\n"
    assert not (tmp_path / "quality.log").exists()  # refused before anything was written
    a_file = tmp_path / "quality.md"
    assert refused(run("quality.py", "--out", a_file), "is not a folder")


def test_explore_and_colour_refuse_before_they_start(tmp_path):
    shot = tmp_path / "shot.png"
    shot.write_bytes(b"\x89PNG a user's picture")
    assert refused(run("explore.py", "no-such-run", "--screenshot", shot), "not written by benchmarks/explore.py")
    assert shot.read_bytes() == b"\x89PNG a user's picture"
    (tmp_path / "keep.txt").write_text("x")
    p = run("colour_cifar.py", "--out", tmp_path)
    assert p.returncode == 2 and "not a new or empty folder" in p.stderr and "Traceback" not in p.stderr


def test_the_rule_itself(tmp_path):
    """None for a new file or one naming the script; a reason for anything else."""
    new, own, other = tmp_path / "a" / "new.json", tmp_path / "own.md", tmp_path / "other.md"
    own.write_text("# table\n\nCommand: `python benchmarks/floor.py --all`\n")
    other.write_text("Command: `python benchmarks/speed.py`\n")
    (tmp_path / "link.md").symlink_to(own)
    assert result_files.refusal(new, "floor.py") is None and result_files.refusal(own, "floor.py") is None
    assert "not written by benchmarks/floor.py" in result_files.refusal(other, "floor.py")
    assert "not a regular file" in result_files.refusal(tmp_path / "link.md", "floor.py")
    assert "not a regular file" in result_files.refusal(tmp_path, "floor.py")
    result_files.write(new, '{"command": "python benchmarks/floor.py"}\n', "floor.py")
    result_files.write(new, '{"command": "python benchmarks/floor.py --all"}\n', "floor.py")  # its own: replaced
    assert "--all" in new.read_text()
    with pytest.raises(SystemExit) as e:
        result_files.write(other, "x", "floor.py")
    assert e.value.code == 2 and other.read_text().startswith("Command")


def test_the_committed_results_name_their_benchmark():
    """Every committed result can be regenerated in place by the benchmark that wrote it."""
    results = BENCH / "results"
    for f in sorted(results.glob("*.md")) + sorted(results.glob("*.json")):
        script = "quality_seeds.py" if f.name.startswith("quality_seeds") else (
            "quality.py" if f.name.startswith("quality") else f.stem + ".py")
        assert result_files.refusal(f, script) is None, f
    assert result_files.refusal(BENCH.parent / "docs" / "explore.png", "explore.py") is None


def test_a_peer_replaces_its_own_result(tmp_path):
    out = tmp_path / "plain.json"
    for _ in range(2):  # the second run finds the first one's result and replaces it
        p = run("peers/plain_loop.py", "--epochs", 1, "--limit", 200, "--json", out)
        assert p.returncode == 0, p.stderr[-2000:]
    assert "benchmarks/peers/plain_loop.py" in out.read_text()
