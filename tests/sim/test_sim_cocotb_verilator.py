"""The cocotb testbench under Verilator: the same checks as under Icarus, on the real core.

Icarus stays the cross-check (``test_sim_golden.py``, ``test_sim_top.py``); the bulk path
(``test_verilator_bulk.py``) streams without Python per clock. One tiny design, one build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.sim.runner import Simulation, SimulationFailed, golden_packets

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (4, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def simulation(export: Export, tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    return Simulation(export, tmp_path_factory.mktemp("verilator"), lanes=2,
                      simulator="verilator")


@pytest.mark.parametrize("budget", [1, None])
def test_bit_exact_with_backpressure(simulation: Simulation, images: np.ndarray,
                                     budget: int | None) -> None:
    masks = simulation.export.budget_mask(budget)
    expected = golden_packets(simulation.export, images, masks)
    simulation.run("stream_images", simulation.config(images, expected=expected,
                                                      mask_rows=masks, backpressure=True))


def test_a_corrupted_golden_value_fails(simulation: Simulation, images: np.ndarray) -> None:
    expected = golden_packets(simulation.export, images, simulation.export.timestep_mask)
    expected[1][0] ^= 1
    with pytest.raises(SimulationFailed) as failure:
        simulation.run("stream_images", simulation.config(images, expected=expected))
    assert len(failure.value.failures) == 1
    assert failure.value.failures[0].startswith("image 1 word 0 (logit 0) at cycle")


def test_the_design_is_built_by_verilator(simulation: Simulation) -> None:
    assert simulation.simulator == "verilator"
    assert (simulation.build_dir / "Vtop.mk").is_file()
    assert not (simulation.build_dir / "sim.vvp").exists()


def test_registers_frames_and_resets(simulation: Simulation, images: np.ndarray) -> None:
    expected = golden_packets(simulation.export, images, simulation.export.timestep_mask)
    simulation.run("register_file", simulation.config(images))
    simulation.run("frame_errors", simulation.config(images, expected=expected))
    simulation.run("reset_mid_image", simulation.config(images, expected=expected))


def test_a_wrong_register_expectation_fails(simulation: Simulation,
                                            images: np.ndarray) -> None:
    config = simulation.config(images)
    config["registers"]["CONFIG_HASH"] ^= 1 << 31
    with pytest.raises(SimulationFailed, match="register CONFIG_HASH"):
        simulation.run("register_file", config)


def test_an_unknown_simulator_is_refused(export: Export, tmp_path: Path) -> None:
    with pytest.raises(StepvitError, match=r"^simulator must be one of verilator, icarus, "
                                           r"got 'xcelium'$"):
        Simulation(export, tmp_path, lanes=2, simulator="xcelium")
