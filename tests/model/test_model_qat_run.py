"""Quantization-aware epochs at the end of a run (``training.qat_epochs``).

After them the run's model is the integer network its export computes: the run reports the
emulation's accuracy, and ``stepvit export`` compares the export with that emulation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from stepvit.host.cli import main
from stepvit.model.config import validate_config
from stepvit.model.data import batches, load_dataset
from stepvit.model.export import load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.finetune import IntegerEmulation
from stepvit.model.golden import GoldenModel
from stepvit.model.train import evaluate, load_run, read_checkpoint, train_run


def tiny_config(**training):
    return validate_config({
        "name": "tiny",
        "model": {"dim": 16, "depth": 1, "mlp_dim": 32, "t_max": 2},
        "training": {"epochs": 2, "batch_size": 128, "lr": 0.02, **training},
    })


@pytest.fixture(scope="module")
def float_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("float") / "run"
    torch.set_num_threads(1)
    train_run(tiny_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def qat_run(float_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished float run, resumed with one quantization-aware epoch (lr as trained)."""
    out = tmp_path_factory.mktemp("qat") / "run"
    shutil.copytree(float_run, out)
    torch.set_num_threads(1)
    train_run(tiny_config(qat_epochs=1, qat_lr=0.003), out, progress=False)
    return out


def test_the_run_reports_its_integer_network(float_run: Path, qat_run: Path) -> None:
    metrics = json.loads((qat_run / "metrics.json").read_text())
    checkpoint = read_checkpoint(qat_run / "checkpoint.pt")
    assert metrics["quantization_aware_epochs"] == checkpoint["qat_epochs_done"] == 1
    # the float epochs are kept as trained; the quantization-aware one is logged after them
    before = read_checkpoint(float_run / "checkpoint.pt")["history"]
    history = checkpoint["history"]
    assert history[:2] == before and history[2]["quantization_aware"] and len(history) == 3
    model, _, _ = load_run(qat_run)
    float_model, _, _ = load_run(float_run)
    assert not torch.equal(model.blocks[0].mlp.fc1.linear.weight,
                           float_model.blocks[0].mlp.fc1.linear.weight)
    images, labels, _ = load_dataset("digits", "", "test")
    emulated = evaluate(IntegerEmulation(model), batches(images, labels, 512))
    plain = evaluate(model, batches(images, labels, 512))
    assert metrics["test_accuracy"] == pytest.approx(emulated)
    assert metrics["float_forward_accuracy"] == pytest.approx(plain)
    assert history[2]["test_accuracy"] == pytest.approx(emulated)


def test_export_compares_with_the_emulation(qat_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert main(["export", str(qat_run), "--out", str(out), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reference"].startswith("integer emulation")
    images, labels, _ = load_dataset("digits", "", "test")
    model, _, _ = load_run(qat_run)
    with torch.no_grad():
        emulated = IntegerEmulation(model).eval()(images).argmax(dim=1)
        plain = model(images).argmax(dim=1)
    integer = GoldenModel(load_export(out)).run(images).predicted
    assert report["class_agreement"] == pytest.approx(
        float((emulated == integer).float().mean()), abs=1e-6)
    assert report["float_forward_agreement"] == pytest.approx(
        float((plain == integer).float().mean()), abs=1e-6)
    # float32 emulation and integer golden model differ only on rare rounding ties
    assert report["class_agreement"] >= 0.99, report
    assert report["float_accuracy"] == pytest.approx(
        float((emulated == labels).float().mean()), abs=1e-6)


def test_a_float_run_is_compared_with_its_float_forward(
    float_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(float_run), "--out", str(tmp_path / "e"), "--images", "32",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reference"] == "float model" and "float_forward_agreement" not in report


def test_no_float_epochs_after_quantization_aware_ones(qat_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(qat_run, out)
    with pytest.raises(StepvitError, match="quantization-aware epoch.*cannot train float epochs"):
        train_run(tiny_config(epochs=3, qat_epochs=1), out, progress=False)


def test_quantization_aware_epochs_need_spiking_neurons() -> None:
    with pytest.raises(StepvitError, match="'training.qat_epochs' needs 'model.neuron: lif'"):
        validate_config({"model": {"neuron": "relu"}, "training": {"qat_epochs": 1}})


def test_the_twin_of_a_quantization_aware_config_trains(tmp_path: Path) -> None:
    config = tmp_path / "qat.yaml"
    config.write_text("name: qat\nmodel: {dim: 8, heads: 1, depth: 1, mlp_dim: 16}\n"
                      "training: {epochs: 1, qat_epochs: 1}\n")
    out = tmp_path / "twin"
    assert main(["train", "--config", str(config), "--non-spiking", "--out", str(out),
                 "--no-progress"]) == 0
    _, saved, _ = load_run(out)
    assert saved["training"]["qat_epochs"] == 0 and saved["model"]["neuron"] == "relu"
