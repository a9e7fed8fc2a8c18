"""The AXI top under cocotb, around a test double of the core: streams, registers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sim_core_double import CoreDouble, double_results

from stepvit.model.export import load_export
from stepvit.rtl.protocol import expected_packet
from stepvit.sim.runner import Simulation, SimulationFailed

LANES = 4


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory, random_export) -> Simulation:
    root = tmp_path_factory.mktemp("top")
    export = load_export(random_export(root / "export", image_shape=(1, 6, 6), seed=4))
    return Simulation(export, root / "build", lanes=LANES, core=CoreDouble(export, lanes=LANES))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 1, 6, 6), dtype=np.uint8)


def expected_packets(simulation: Simulation, images: np.ndarray, mask_rows: np.ndarray) -> list:
    reference = double_results(simulation.export, images, mask_rows)
    return [expected_packet(reference["logits"][i], reference["predicted"][i],
                            reference["spike_totals"][i]) for i in range(len(images))]


def test_stream_matches_the_reference(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    results = simulation.run("stream_images", simulation.config(images, expected=expected))
    assert len(results["packets"]) == len(images)
    for packet in results["packets"]:
        assert len(packet["words"]) == simulation.packet_words
        # image frames of 9 words: the cycle count covers at least the frame's words
        assert packet["words"][4] >= 9


def test_backpressure_changes_nothing(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    config = simulation.config(images, expected=expected, backpressure=True, seed=7)
    results = simulation.run("stream_images", config)
    gaps = [packet["word_cycles"][-1] - packet["word_cycles"][0] for packet in results["packets"]]
    assert max(gaps) > simulation.packet_words - 1, "the output stream never paused"


def test_mask_writes_reach_the_core(simulation: Simulation, images: np.ndarray) -> None:
    budget_masks = simulation.export.budget_mask(1)
    expected = expected_packets(simulation, images, budget_masks)
    simulation.run("stream_images", simulation.config(images, expected=expected,
                                                      mask_rows=budget_masks))
    trained = expected_packets(simulation, images, simulation.export.timestep_mask)
    assert trained != expected, "budget 1 should change the double's spike counts"
    with pytest.raises(SimulationFailed) as failure:
        simulation.run("stream_images", simulation.config(images, expected=trained,
                                                          mask_rows=budget_masks))
    assert failure.value.failures
    assert all(line.startswith("image ") and " at cycle " in line
               for line in failure.value.failures), failure.value.failures


def test_a_corrupted_expected_value_fails(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    expected[2][1] ^= 1
    with pytest.raises(SimulationFailed) as failure:
        simulation.run("stream_images", simulation.config(images, expected=expected))
    assert failure.value.failures
    assert "image 2 word 1 (logit 1) at cycle" in failure.value.failures[0]


def test_register_file(simulation: Simulation, images: np.ndarray) -> None:
    simulation.run("register_file", simulation.config(images))


def test_a_wrong_register_expectation_fails(simulation: Simulation, images: np.ndarray) -> None:
    config = simulation.config(images)
    config["registers"]["CONFIG_HASH"] ^= 1 << 31
    with pytest.raises(SimulationFailed, match="register CONFIG_HASH"):
        simulation.run("register_file", config)


def test_short_and_long_frames(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    simulation.run("frame_errors", simulation.config(images, expected=expected))


def test_dropped_frames_between_good_ones_keep_the_packet_order(
        simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    simulation.run("dropped_frames_between_good_ones",
                   simulation.config(images, expected=expected))


def test_batches_of_frames_in_one_transfer(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    simulation.run("batches", simulation.config(images, expected=expected))


def test_reset_in_the_middle_of_an_image(simulation: Simulation, images: np.ndarray) -> None:
    expected = expected_packets(simulation, images, simulation.export.timestep_mask)
    simulation.run("reset_mid_image", simulation.config(images, expected=expected))
