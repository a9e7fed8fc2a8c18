"""The shipped digits recipe: what a run guarantees, and the integer model keeps its accuracy.

What holds whatever the float rounding is asserted exactly: the run ends within its step
target, its mask froze no later than the config says, and the export carries that mask.
The accuracy figures turn on float rounding (the same seed gave different masks on two
machines of one kind), so they are bounds whose margins come from a spread: 20 runs of this
recipe and its variants on 2026-12-04 (seeds 0-4, 2-core machine) gave float accuracies of
94.4-97.5 %, integer minus float of -1.1 to +0.6 points and a float/integer class
agreement of 97.2-100 %; the issue that led to this recipe saw 94.4-96.1 % on another
machine with the one before it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host.cli import main
from stepvit.model.config import DEFAULT_CONFIG, load_config, validate_config
from stepvit.model.export import load_export
from stepvit.model.train import train_run

#: Below the lowest float accuracy seen (94.4 %) by more than a point and a half.
MIN_FLOAT_ACCURACY = 0.93
#: Twice the widest integer/float gap seen (1.1 points).
MAX_INTEGER_GAP = 0.02
#: Below the lowest agreement seen (97.2 %) by two points.
MIN_AGREEMENT = 0.95


@pytest.mark.slow
def test_the_digits_recipe_is_within_its_target_and_its_export_keeps_its_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = validate_config(load_config(DEFAULT_CONFIG))
    training = config["training"]
    metrics = train_run(config, tmp_path, progress=False)
    assert metrics is not None
    assert metrics["avg_timesteps"] <= training["target_timesteps"]
    last_learning_epoch = training["epochs"] - training["freeze_mask_epochs"]
    assert metrics["mask_frozen_in_epoch"] <= last_learning_epoch + 1
    assert (metrics["train_images"], metrics["validation_images"]) == (1293, 144)
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert load_export(tmp_path / "export").timestep_mask.tolist() == metrics["timestep_mask"]
    assert report["images"] == 360
    assert report["float_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert report["float_accuracy"] >= MIN_FLOAT_ACCURACY, report
    assert abs(report["integer_accuracy"] - report["float_accuracy"]) <= MAX_INTEGER_GAP, report
    assert report["class_agreement"] >= MIN_AGREEMENT, report
