"""The generated Verilog (top and core) against the golden model, bit for bit, under cocotb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.sim.runner import Simulation, SimulationFailed, golden_packets, simulate

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (4, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module", params=[2, 4])
def simulation(request: pytest.FixtureRequest, export: Export,
               tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    lanes = request.param
    return Simulation(export, tmp_path_factory.mktemp(f"lanes{lanes}"), lanes=lanes)


@pytest.mark.parametrize("budget", [1, None])
def test_bit_exact_against_golden(simulation: Simulation, images: np.ndarray,
                                  budget: int | None) -> None:
    mask_rows = simulation.export.budget_mask(budget)
    expected = golden_packets(simulation.export, images, mask_rows)
    config = simulation.config(images, expected=expected, mask_rows=mask_rows)
    results = simulation.run("stream_images", config)
    assert len(results["packets"]) == len(images)


def test_a_corrupted_golden_value_fails(simulation: Simulation, images: np.ndarray) -> None:
    mask_rows = simulation.export.timestep_mask
    expected = golden_packets(simulation.export, images, mask_rows)
    expected[3][-1] += 1  # the head.in spike count of the last image
    with pytest.raises(SimulationFailed) as failure:
        simulation.run("stream_images", simulation.config(images, expected=expected))
    assert len(failure.value.failures) == 1
    assert failure.value.failures[0].startswith("image 3 word 13 (spike count head.in) at cycle")


def test_a_corrupted_weight_in_the_design_fails(export: Export, images: np.ndarray,
                                                tmp_path: Path) -> None:
    arrays = dict(export.arrays)
    arrays["head.bias"] = arrays["head.bias"].copy()
    arrays["head.bias"][0] += 1
    corrupted = Export(export.path, export.manifest, arrays)
    simulation = Simulation(corrupted, tmp_path, lanes=2)
    expected = golden_packets(export, images, export.timestep_mask)
    with pytest.raises(SimulationFailed, match=r"image 0 word 0 \(logit 0\) at cycle"):
        simulation.run("stream_images", simulation.config(images, expected=expected))


def test_backpressure_changes_no_result(simulation: Simulation, images: np.ndarray) -> None:
    expected = golden_packets(simulation.export, images, simulation.export.timestep_mask)
    config = simulation.config(images, expected=expected, backpressure=True, seed=3)
    simulation.run("stream_images", config)


def test_frame_errors_and_reset_with_the_real_core(simulation: Simulation,
                                                   images: np.ndarray) -> None:
    expected = golden_packets(simulation.export, images, simulation.export.timestep_mask)
    simulation.run("frame_errors", simulation.config(images, expected=expected))
    simulation.run("reset_mid_image", simulation.config(images, expected=expected))


def test_simulate_api_returns_decoded_results(export: Export, images: np.ndarray,
                                              tmp_path: Path) -> None:
    results = simulate(export.path, images, budget=2, lanes=2, build_dir=tmp_path)
    expected = golden_packets(export, images, export.budget_mask(2))
    assert [r["predicted"] for r in results] == [packet[3] for packet in expected]
    for result, packet in zip(results, expected):
        assert [v & 0xFFFFFFFF for v in result["logits"]] == packet[:3]
        assert result["spike_totals"] == packet[5:]
        assert result["cycles"] > 0


def test_simulate_refuses_bad_images(export: Export) -> None:
    with pytest.raises(StepvitError, match=r"^images: expected shape \[B, 1, 4, 4\]"):
        simulate(export.path, np.zeros((2, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(StepvitError, match="^images: expected dtype uint8"):
        simulate(export.path, np.zeros((2, *SHAPE), dtype=np.int16))
