"""The non-spiking twin (``stepvit train --non-spiking``): the same network with ReLUs."""

import json

import pytest
import torch

from stepvit.host import cli
from stepvit.model.export.errors import StepvitError
from stepvit.model.lif import LIFNeuron
from stepvit.model.quantize import quantize
from stepvit.model.train import load_run


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin") / "run"
    status = cli.main(["train", "--non-spiking", "--epochs", "2", "--out", str(out),
                       "--no-progress"])
    assert status == 0
    return out


def test_the_twin_trains_with_relus_and_one_step(twin_run, capsys):
    model, config, _ = load_run(twin_run)
    assert config["model"]["neuron"] == "relu" and config["model"]["t_max"] == 1
    assert config["training"]["fixed_timesteps"]
    neurons = [module for module in model.modules() if isinstance(module, LIFNeuron)]
    assert neurons and not any(neuron.spiking for neuron in neurons)
    currents = torch.linspace(-2.0, 2.0, 9).reshape(1, 1, 9)
    # a ReLU, not spikes: graded values, no threshold
    assert neurons[0](currents, torch.ones(1)).tolist() == torch.relu(currents).tolist()
    metrics = json.loads((twin_run / "metrics.json").read_text())
    # it learns digits (10 classes: chance is 10 %)
    assert metrics["test_accuracy"] > 0.5


def test_the_twin_is_not_exported(twin_run, capsys):
    model, _, class_names = load_run(twin_run)
    with pytest.raises(StepvitError, match=r"^export: this run is the non-spiking twin"):
        quantize(model, class_names)
    assert cli.main(["export", str(twin_run)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("stepvit export: error: export: this run is the non-spiking twin")
    assert len(error.strip().splitlines()) == 1


def test_a_bad_neuron_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("name: bad\nmodel:\n  neuron: tanh\n")
    with pytest.raises(StepvitError, match="'model.neuron' must be 'lif' or 'relu', got 'tanh'"):
        from stepvit.model.config import load_config
        load_config(config)
