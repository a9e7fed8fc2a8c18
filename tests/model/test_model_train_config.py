import subprocess
import sys

import pytest
import yaml

from stepvit.host.cli import main
from stepvit.model.config import DEFAULT_CONFIG, DEFAULTS, load_config, validate_config
from stepvit.model.export.errors import StepvitError


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_packaged_digits_config_is_complete_and_valid():
    config = load_config(DEFAULT_CONFIG)
    assert config["data"]["dataset"] == "digits"
    assert config["model"]["t_max"] == 4
    assert set(config) == set(DEFAULTS)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_packaged_cifar_configs_are_valid(name):
    config = load_config(DEFAULT_CONFIG.with_name(f"{name}.yaml"))
    assert config["data"]["dataset"] == name and config["data"]["augment"]


def test_defaults_fill_what_a_file_leaves_out(tmp_path):
    config = load_config(write(tmp_path, "model: {t_max: 6}\n"))
    assert config["model"]["t_max"] == 6
    assert config["model"]["dim"] == DEFAULTS["model"]["dim"]
    assert isinstance(load_config(write(tmp_path, "training: {lr: 1}\n"))["training"]["lr"],
                      float)


@pytest.mark.parametrize(("text", "message"), [
    ("model: {t_max: 0}\n", "'model.t_max' must be >= 1, got 0"),
    ("model: {t_max: -2}\n", "'model.t_max' must be >= 1"),
    ("model: {t_max: 2.5}\n", "'model.t_max' must be a int"),
    ("model: {tmax: 4}\n", "unknown config key 'model.tmax'"),
    ("optimiser: {}\n", "unknown config key 'optimiser'"),
    ("model: 4\n", "'model' must be a mapping"),
    ("data: {dataset: imagenet}\n", "'data.dataset' must be one of"),
    ("model: {reset: half}\n", "'model.reset' must be 'hard' or 'soft'"),
    ("model: {dim: 30, heads: 4}\n", "'model.heads' \\(4\\) must divide"),
    ("training: {fixed_timesteps: 1}\n", "'training.fixed_timesteps' must be a bool"),
    ("- 1\n- 2\n", "must be a mapping of sections"),
    ("", "is empty"),
    ("model: {t_max: [\n", "not valid YAML at line"),
])
def test_bad_configs_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(StepvitError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(StepvitError, match="cannot read config .*nowhere.yaml"):
        load_config(tmp_path / "nowhere.yaml")


def test_validate_does_not_change_its_input():
    given = {"model": {"t_max": 3}}
    validate_config(given)
    assert given == {"model": {"t_max": 3}}


def error_line(capsys, *arguments):
    """Run ``stepvit`` in this process; return its single stderr line (exit status 2)."""
    assert main(list(map(str, arguments))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepvit train: error: ")
    return lines[0]


@pytest.mark.parametrize(("text", "fragment"), [
    ("model: {t_max: 0}\n", "'model.t_max' must be >= 1"),
    ("model: {colour: red}\n", "unknown config key 'model.colour'"),
    ("data: [\n", "not valid YAML"),
])
def test_cli_refuses_bad_config_in_one_line(tmp_path, capsys, text, fragment):
    line = error_line(capsys, "train", "--config", write(tmp_path, text),
                      "--out", tmp_path / "run")
    assert fragment in line


def test_cli_refuses_missing_config_and_bad_epochs(tmp_path, capsys):
    assert "cannot read config" in error_line(capsys, "train", "--config",
                                              tmp_path / "absent.yaml")
    assert "--epochs must be >= 1" in error_line(capsys, "train", "--epochs", "0",
                                                 "--out", tmp_path / "run")


def test_cli_refuses_corrupt_checkpoint_without_traceback(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x80\x02 this is no checkpoint")
    config = write(tmp_path, yaml.safe_dump({"training": {"epochs": 1}}))
    result = subprocess.run(
        [sys.executable, "-m", "stepvit.host.cli", "train", "--config", str(config),
         "--out", str(run), "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "unreadable" in lines[0]
    assert "Traceback" not in result.stderr
