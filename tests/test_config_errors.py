"""Bad configs are refused with one line that names the key (or the file) and what is
expected; `aevb.cli.main` turns them into exit code 2 and never lets a traceback out."""
from __future__ import annotations

import pytest

from aevb import cli
from aevb.config import ConfigError, make_config


@pytest.mark.parametrize("text,words", [
    ("epochs: ten\n", ["'epochs'", "expected int", "'ten'"]),
    ("epochs: 2.5\n", ["'epochs'", "expected int"]),
    ("lr: fast\n", ["'lr'", "expected float"]),
    ("lr: -1\n", ["'lr'", "invalid value", "expected a positive number"]),
    ("lr: .nan\n", ["'lr'", "nan", "expected a positive number"]),
    ("batch_size: 0\n", ["'batch_size'", "expected 1 or more"]),
    ("latent_dim: -3\n", ["'latent_dim'", "-3", "expected 1 or more"]),
    ("hidden: 400\n", ["'hidden'", "expected list"]),
    ("hidden: [400, x]\n", ["'hidden'"]),
    ("hidden: [0]\n", ["'hidden'", ">= 1"]),
    ("conditional: maybe\n", ["'conditional'", "expected bool"]),
    ("epoch: 3\n", ["unknown config key 'epoch'", "did you mean 'epochs'"]),
    ("zzz: 1\n", ["unknown config key 'zzz'"]),
    ("binarize: sometimes\n", ["'binarize'"]),
    ("optimizer: adamm\n", ["'optimizer'", "'adamm'", "adam"]),
    ("clip_grad: 0\n", ["'clip_grad'"]),
    ("noise: 2\n", ["'noise'", "between 0 and 1"]),
    ("precision: fp8\n", ["'precision'", "fp32, bf16 or fp16", "'fp8'"]),
    ("threads: -2\n", ["'threads'", "'auto' or a positive number"]),
    ("threads: two\n", ["'threads'", "'two'"]),
    ("device: tpu\n", ["'device'", "unknown device 'tpu'", "cuda:N"]),
    ("device: cuda:x\n", ["'device'", "'cuda:x'"]),
    ("- 1\n- 2\n", ["expected a mapping", "list"]),
    ("just a string\n", ["expected a mapping", "str"]),
    ("a: [\n", ["not valid YAML", "line 2, column 1"]),
    ("a: b: c\n", ["not valid YAML", "line 1"]),
])
def test_bad_values_name_the_key(tmp_path, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        make_config(path)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_flags_are_checked_like_the_file():
    with pytest.raises(ConfigError, match="'batch_size': expected int, got 'ten'"):
        make_config(batch_size="ten")
    assert make_config(batch_size="64", hidden="32,32", lr="1e-3").hidden == [32, 32]


def test_empty_file_is_the_defaults(tmp_path):
    (tmp_path / "e.yaml").write_text("")
    assert make_config(tmp_path / "e.yaml") == make_config()


@pytest.mark.parametrize("argv,words", [
    (["train", "{d}/missing.yaml"], ["missing.yaml", "not found"]),
    (["train", "{d}"], ["cannot read"]),
    (["train", "{d}/bin.yaml"], ["not text"]),
    (["train", "--dataset", "no-such-data", "--out", "{d}/r"], ["unknown dataset 'no-such-data'"]),
    (["train", "--hidden", "10000000000,10000000000", "--out", "{d}/r"], ["cannot build the model"]),
    (["train", "--resume", "--out", "{d}/nothing"], ["config.json", "not found"]),
    (["sample", "{d}/nothing", "-o", "{d}/x.png"], ["nothing"]),
])
def test_cli_reports_one_line_and_exit_code_2(tmp_path, capsys, argv, words):
    (tmp_path / "bin.yaml").write_bytes(b"\x00\xff\xfe\x80")
    rc = cli.main([a.format(d=tmp_path) for a in argv] + (["--no-progress"] if argv[0] == "train" else []))
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aevb {argv[0]}: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("argv,words", [
    (["sample", "R", "-n", "0"], ["-n", "expected a positive integer, got '0'"]),
    (["sample", "R", "--gmm", "0"], ["--gmm", "positive integer"]),
    (["sample", "R", "--per-class", "x"], ["--per-class", "positive integer, got 'x'"]),
    (["plot", "R", "samples", "-n", "0"], ["-n", "positive integer"]),
    (["eval", "R", "--limit", "0"], ["--limit", "positive integer"]),
    (["eval", "R", "--batch-size", "0"], ["--batch-size", "positive integer"]),
    (["eval", "R", "--nll-samples", "many"], ["--nll-samples", "non-negative integer, got 'many'"]),
    (["score", "R", "--anomaly-classes", "x"], ["--anomaly-classes", "class labels such as 9 or 8,9"]),
])
def test_bad_numbers_in_flags_are_one_line_errors(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as e:  # argparse refuses them before anything is loaded
        cli.main([str(tmp_path) if a == "R" else a for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    for w in words:
        assert w in err.strip().splitlines()[-1], (w, err)
