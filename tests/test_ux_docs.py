"""README facts that can drift from the code: install commands, the run directory, the
names of runs and the seed reports' settings."""
import re
from pathlib import Path

import yaml

from aevb.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_install_commands_and_the_cpu_only_note():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [x for x in first_block.splitlines() if x and not x.startswith("#")]
    assert len(commands) == 2
    assert commands[0] == ("python -m pip install torch==2.13.0 && python -m pip install -e . && "
                           "aevb train configs/digits.yaml --overwrite")
    assert commands[1].startswith("python -m pip install torch==2.13.0 && ")
    assert commands[1].endswith("&& python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == commands[1]  # CI runs README's test command
    after = README.split("```", 3)[2]  # the text right below the two commands
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in after
    assert "GPU" in after


def test_the_run_directory_listing_names_what_a_run_writes(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["eval", str(run), "--nll-samples", "5", "--no-progress"]) == 0
    listing = README.split("## Run directory", 1)[1].split("```", 2)[1]
    for entry in run.iterdir():
        name = entry.name + ("/" if entry.is_dir() else "")
        assert name in listing, f"{name} is written into a run directory but not in README's listing"


def test_readme_names_runs_as_the_configs_write_them():
    """A run of configs/NAME.yaml is runs/NAME: README must not name a shortened runs/..."""
    stems = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    for name in set(re.findall(r"runs/([\w-]+)", README)):
        assert name in stems or not any(s.startswith(name) for s in stems), f"runs/{name}"
    for p in (ROOT / "configs").glob("*.yaml"):  # a config's comment names its own run
        for name in re.findall(r"aevb (?:sample|eval|plot|report|score|impute) runs/([\w-]+)", p.read_text()):
            assert name == p.stem, f"{p.name} names runs/{name}"


def test_seed003_config_trains_as_long_as_the_report():
    assert yaml.safe_load((ROOT / "configs" / "seed003_mnist.yaml").read_text())["epochs"] == 20
