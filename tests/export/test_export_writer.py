"""The export writer refuses what the hardware cannot hold, naming the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.writer import write_export


@pytest.fixture
def arguments(tmp_path: Path, random_export) -> dict:
    """The writer's arguments for the tiny export with a fourth class, arrays as int64."""
    export = load_export(random_export(tmp_path / "base", num_classes=4))
    return {
        "name": "w",
        "architecture": export.arch,
        "t_max": export.t_max,
        "neuron": export.neuron,
        "timestep_mask": export.timestep_mask,
        "thresholds": export.thresholds,
        "arrays": {key: value.astype(np.int64) for key, value in export.arrays.items()},
    }


def test_a_current_wider_than_32_bits_is_refused_by_layer(tmp_path: Path, arguments) -> None:
    arguments["arrays"]["blocks.0.attn.k.bias"][3] = 2**31 - 1
    with pytest.raises(StepvitError, match=r"^export: blocks\.0\.attn\.k: its current values "
                                           r"need 33 bits"):
        write_export(tmp_path / "out", **arguments)


def test_a_weight_outside_int8_is_refused_by_name(tmp_path: Path, arguments) -> None:
    arguments["arrays"]["blocks.0.mlp.fc1.weight"][0, 0] = 128
    with pytest.raises(StepvitError, match=r"blocks\.0\.mlp\.fc1\.weight holds values in "
                                           r"\[-?\d+, 128\], outside int8"):
        write_export(tmp_path / "out", **arguments)


def test_the_written_widths_are_the_proven_ones(tmp_path: Path, arguments) -> None:
    arguments["arrays"]["head.bias"][0] = 2**20
    export = load_export(write_export(tmp_path / "out", **arguments))
    assert export.bit_widths["logit"] == 22
