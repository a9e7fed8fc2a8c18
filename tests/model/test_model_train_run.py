import json
import math
import shutil

import pytest
import torch

from stepvit.model import train as train_module
from stepvit.model.config import validate_config
from stepvit.model.data import batches, load_dataset
from stepvit.model.export.errors import StepvitError
from stepvit.model.network import SpikingViT
from stepvit.model.train import (
    evaluate,
    load_run,
    read_checkpoint,
    recalibrate_batchnorm,
    train_run,
)


def tiny_config(**training):
    return validate_config({
        "name": "tiny",
        "model": {"dim": 8, "heads": 1, "depth": 1, "mlp_dim": 16, "t_max": 4},
        "training": {"epochs": 2, "batch_size": 128, "lr": 0.02, **training},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = train_run(tiny_config(penalty=0.5, score_lr=1.0), out, progress=False)
    return out, metrics


def test_run_writes_checkpoint_metrics_and_plot(trained):
    out, metrics = trained
    checkpoint = read_checkpoint(out / "checkpoint.pt")
    assert set(checkpoint) >= {"config", "state_dict", "epoch", "optimizer", "class_names",
                               "metrics", "history"}
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2
    assert checkpoint["class_names"] == [str(digit) for digit in range(10)]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("test_accuracy", "t_max", "timesteps_per_module", "timesteps_per_block",
                "avg_timesteps", "spike_rate", "ac_ops", "mac_ops", "energy_uj"):
        assert key in on_disk
    assert on_disk["t_max"] == 4 and len(on_disk["timesteps_per_block"]) == 1
    assert (out / "training.png").stat().st_size > 10_000


def test_load_run_rebuilds_the_trained_model(trained):
    out, metrics = trained
    model, config, class_names = load_run(out)
    assert not model.training and config["name"] == "tiny" and len(class_names) == 10
    images, labels, _ = load_dataset("digits", "", "test")
    assert evaluate(model, batches(images, labels, 256)) == pytest.approx(
        metrics["test_accuracy"])
    assert model.timestep_mask().sum(dim=1).tolist() == list(
        metrics["timesteps_per_module"].values())


def test_evaluate_takes_a_capped_mask(trained):
    model, _, _ = load_run(trained[0])
    images, labels, _ = load_dataset("digits", "", "test")
    silent = torch.zeros_like(model.timestep_mask())
    # nothing fires: every image gets the bias's class
    expected = float((labels == int(model.head.linear.bias.argmax())).float().mean())
    assert evaluate(model, batches(images, labels, 256), masks=silent) == pytest.approx(expected)


def test_penalty_reduces_active_steps(tmp_path):
    strong = train_run(tiny_config(epochs=1, penalty=5.0, score_lr=2.0), tmp_path / "strong",
                       progress=False)
    none = train_run(tiny_config(epochs=1, penalty=0.0, score_lr=2.0), tmp_path / "none",
                     progress=False)
    assert strong["avg_timesteps"] < none["avg_timesteps"]
    assert strong["ac_ops"] < none["ac_ops"]


def test_fixed_timesteps_keeps_every_step(tmp_path):
    metrics = train_run(tiny_config(epochs=1, fixed_timesteps=True, penalty=5.0), tmp_path,
                        progress=False)
    assert metrics["avg_timesteps"] == 4.0 and metrics["fixed_timesteps"]
    model, _, _ = load_run(tmp_path)
    assert math.isinf(float(model.timestep_scores.min()))
    assert not model.timestep_scores.requires_grad


def test_resume_continues_where_the_run_stopped(tmp_path, monkeypatch):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    save = train_module._save_atomically

    def save_and_keep_epoch_one(payload, path):
        save(payload, path)
        if payload["epoch"] == 1 and payload["metrics"] is None:
            stopped.mkdir()
            shutil.copy(path, stopped / "checkpoint.pt")  # as if the run died here

    monkeypatch.setattr(train_module, "_save_atomically", save_and_keep_epoch_one)
    train_run(tiny_config(), straight, progress=False)
    monkeypatch.setattr(train_module, "_save_atomically", save)
    after_one = read_checkpoint(stopped / "checkpoint.pt")["state_dict"]["head.linear.weight"]
    resumed = train_run(tiny_config(), stopped, progress=False)
    history = read_checkpoint(stopped / "checkpoint.pt")["history"]
    assert [entry["epoch"] for entry in history] == [1, 2] and resumed["epochs"] == 2
    continued = read_checkpoint(stopped / "checkpoint.pt")["state_dict"]
    for name, value in read_checkpoint(straight / "checkpoint.pt")["state_dict"].items():
        assert torch.allclose(continued[name].float(), value.float(), atol=1e-6), name
    assert not torch.allclose(after_one, continued["head.linear.weight"])  # epoch 2 did train


def test_resume_refuses_another_config_and_missing_checkpoint(tmp_path):
    train_run(tiny_config(epochs=1), tmp_path, progress=False)
    with pytest.raises(StepvitError, match="another config"):
        train_run(tiny_config(epochs=1, lr=0.5), tmp_path, progress=False)
    with pytest.raises(StepvitError, match="no checkpoint"):
        train_run(tiny_config(epochs=1), tmp_path / "elsewhere", resume="require",
                  progress=False)


def test_damaged_checkpoints_are_refused(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(StepvitError, match="unreadable"):
        load_run(tmp_path)
    torch.save({"config": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(StepvitError, match="lacks state_dict"):
        load_run(tmp_path)
    with pytest.raises(StepvitError, match="no checkpoint"):
        load_run(tmp_path / "absent")


def test_batchnorm_recalibration_averages_the_batches():
    torch.manual_seed(0)
    model = SpikingViT((1, 8, 8), 2, 8, 1, 1, 16, 10, 2)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    before = model.embed.bn.running_mean.clone()
    recalibrate_batchnorm(model, images, 32, torch.device("cpu"))
    one_batch = {name: value.clone() for name, value in model.state_dict().items()
                 if name.endswith("running_mean")}
    recalibrate_batchnorm(model, images, 16, torch.device("cpu"))
    assert not torch.allclose(before, one_batch["embed.bn.running_mean"])
    # the first BN sees the raw images: two equal halves average to the whole
    assert torch.allclose(model.embed.bn.running_mean, one_batch["embed.bn.running_mean"],
                          atol=1e-5)
    assert all(value.abs().sum() > 0 for value in one_batch.values())
    assert model.embed.bn.momentum == 0.1 and model.training


def test_target_stops_the_penalty_and_freezes_the_mask_within_it(tmp_path, monkeypatch):
    build = train_module.build_model

    def staggered_scores(*arguments):
        model = build(*arguments)  # scores spread out, so they cross zero one by one
        with torch.no_grad():
            model.timestep_scores.copy_(torch.linspace(0.05, 1.0, 16).reshape(4, 4))
        return model

    monkeypatch.setattr(train_module, "build_model", staggered_scores)
    common = {"epochs": 1, "penalty": 5.0, "score_lr": 0.2}
    unlimited = train_run(tiny_config(**common), tmp_path / "unlimited", progress=False)
    capped = train_run(tiny_config(**common, target_timesteps=3.5, freeze_mask_epochs=1),
                       tmp_path / "capped", progress=False)
    assert unlimited["avg_timesteps"] < 3.0  # the penalty alone goes further
    assert 3.0 <= capped["avg_timesteps"] <= 3.5
