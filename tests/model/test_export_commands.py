"""``stepvit export`` and ``stepvit eval`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scalar_reference import reference_run

from stepvit.host.cli import main
from stepvit.model.config import validate_config
from stepvit.model.data import load_dataset
from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.model.train import train_run

#: Class agreement of the one-epoch run below (23 % accurate, 64 images): measured 0.875;
#: test_export_agreement.py pins a trained run.
MIN_AGREEMENT_ONE_EPOCH = 0.8

DIGITS = dict(image_shape=[1, 8, 8], patch=2, dim=16, heads=2, depth=1, mlp_dim=32,
              num_classes=10, t_max=3)



def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_reports_accuracy_and_work_per_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], random_export
) -> None:
    export_dir = random_export(tmp_path / "export", **DIGITS, mask=np.ones((4, 3), dtype=np.int64))
    report = run_json(capsys, ["eval", str(export_dir), "--dataset", "digits", "--images", "40",
                               "--budget", "1,2,3", "--no-progress"])
    assert report["images"] == 40 and report["dataset"] == "digits"
    rows = report["results"]
    assert [row["budget"] for row in rows] == [1, 2, 3]
    assert [row["avg_timesteps"] for row in rows] == [1.0, 2.0, 3.0]
    assert rows[0]["ac_ops"] < rows[2]["ac_ops"] < rows[2]["dense_ac_ops"]
    images, labels, _ = load_dataset("digits", "", "test")
    export = load_export(export_dir)
    for row in rows:
        predicted = GoldenModel(export).run(images[:40],
                                            budget=row["budget"]).predicted
        assert row["accuracy"] == pytest.approx(float((predicted == labels[:40]).float().mean()),
                                                abs=1e-6)
    assert rows[2]["energy_uj"] == pytest.approx(
        (4.6 * rows[2]["mac_ops"] + 0.9 * rows[2]["ac_ops"]) * 1e-6, rel=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "0"], "--budget 0 is outside 1..3"),
        (["--budget", "two"], "--budget: expected a budget B, a list B1,B2, a range A-B, or all"),
        ([], "give --dataset"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"],
         "cifar10 not found: put the python version of the data set"),
    ],
)
def test_eval_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
    random_export
) -> None:
    export_dir = random_export(tmp_path / "export", **DIGITS)
    assert main(["eval", str(export_dir), "--no-progress", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("stepvit eval: error: ") and error.count("\n") == 1
    assert message in error


def test_eval_of_a_missing_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "none"), "--dataset", "digits"]) == 2
    assert "no such export directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    config = validate_config({
        "name": "tiny",
        "model": {"dim": 16, "depth": 1, "mlp_dim": 32, "t_max": 2},
        "training": {"epochs": 1, "batch_size": 128},
    })
    train_run(config, run_dir, progress=False)
    torch.set_num_threads(threads)
    return run_dir


def test_export_writes_a_valid_export_with_accuracies_and_golden_vectors(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    report = run_json(capsys, ["export", str(trained_run), "--out", str(out), "--images", "64",
                               "--no-progress"])
    export = load_export(out)
    accuracy = export.manifest["accuracy"]
    assert accuracy["dataset"] == "digits" and accuracy["images"] == 64
    assert report["integer_accuracy"] == accuracy["integer"]
    assert report["float_accuracy"] == accuracy["float"]
    # Images where both models agree are right or wrong together: the accuracies can
    # differ by at most the share of images where they disagree.
    disagreement = 1.0 - report["class_agreement"]
    assert abs(report["integer_accuracy"] - report["float_accuracy"]) <= disagreement + 1e-6
    assert report["class_agreement"] >= MIN_AGREEMENT_ONE_EPOCH, report
    assert report["config_hash"] == export.manifest["config_hash"]
    vectors = np.load(out / "golden_vectors.npz")
    assert vectors["budgets"].tolist() == [1, 2]
    # The vectors against the scalar reference of SPEC §3 (not the golden model that wrote
    # them): logits and per-layer spike totals of the first images at budget 1.
    for index in range(2):
        mask = export.budget_mask(1).tolist()
        logits, spikes, _ = reference_run(export, vectors["images"][index], mask)
        assert vectors["logits"][0, index].tolist() == logits, f"image {index}"
        assert vectors["spike_totals"][0, index].tolist() == [sum(spikes[name])
                                                             for name in export.layer_names()]


def test_export_of_a_run_without_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path), "--no-progress"]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_export_with_quantization_aware_finetuning(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = run_json(capsys, ["export", str(trained_run), "--out", str(tmp_path / "plain"),
                              "--images", "32", "--finetune-epochs", "0", "--no-progress"])
    tuned = run_json(capsys, ["export", str(trained_run), "--out", str(tmp_path / "tuned"),
                              "--images", "32", "--finetune-epochs", "1", "--no-progress"])
    assert tuned["finetune_epochs"] == 1 and plain["finetune_epochs"] == 0
    assert tuned["float_accuracy"] == plain["float_accuracy"]
    assert tuned["config_hash"] != plain["config_hash"]  # the weights moved
    load_export(tmp_path / "tuned")


def test_export_refuses_negative_finetuning(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(trained_run), "--finetune-epochs", "-1"]) == 2
    assert "--finetune-epochs must be >= 0" in capsys.readouterr().err
