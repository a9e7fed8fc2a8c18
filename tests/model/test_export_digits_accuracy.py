"""The shipped digits config: the exported integer model keeps the float model's accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host.cli import main
from stepvit.model.config import DEFAULT_CONFIG, load_config, validate_config
from stepvit.model.train import train_run


@pytest.mark.slow
def test_digits_integer_accuracy_within_half_a_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_run(validate_config(load_config(DEFAULT_CONFIG)), tmp_path, progress=False)
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 360
    assert report["float_accuracy"] > 0.9
    assert report["integer_accuracy"] >= report["float_accuracy"] - 0.005
    # Measured 99.7 % (seed 0): the disagreements are images with a small float margin.
    assert report["class_agreement"] >= 0.99
