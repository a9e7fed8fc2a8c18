"""A design that loads its parameters from DDR (``weights="ddr"``), under Icarus.

Two random exports of one shape (the tiny network, seeds 0 and 2: picked because their
proven ``bit_widths`` are equal, so that a design at the export's widths serves both;
seeds 0-11 give four sets of widths, all of one shape hash, which leaves the widths out:
tests/sim/test_sim_ddr_widths.py runs a wider one on a design with a margin) have
byte-identical ddr Verilog and different images; the design loads an image
from a simulated DDR with the PYNQ-Z2's figures, checks its checksum and computes the
golden model's outputs bit for bit, in the rom design's cycles; one byte flipped in DDR
is caught; the same build loaded with the other export's image computes that export's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ddr_checks import assert_bit_exact_in_rom_cycles

from stepvit.model.export import Export, load_export
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.design_image import design_image, head_bias_word
from stepvit.rtl.generate import to_verilog
from stepvit.rtl.top import StepvitAccel
from stepvit.rtl.weight_image import unpack_image
from stepvit.sim.runner import Simulation, SimulationFailed, golden_packets

SHAPE = (1, 4, 4)
#: Two seeds of the tiny export whose proven bit widths are equal: one shape, two models.
SEEDS = (0, 2)
LANES = 4
IMAGES = 2


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> list[Export]:
    folder = tmp_path_factory.mktemp("exports")
    return [load_export(random_export(folder / f"seed{seed}", image_shape=SHAPE, seed=seed))
            for seed in SEEDS]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def ddr_simulation(exports: list[Export], tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    return Simulation(exports[0], tmp_path_factory.mktemp("ddr"), lanes=LANES, weights="ddr")


def test_the_ddr_verilog_depends_only_on_the_shape(exports: list[Export]) -> None:
    first, second = exports
    assert first.bit_widths == second.bit_widths
    assert first.shape_hash == second.shape_hash
    assert first.config_hash != second.config_hash
    assert first.manifest["weights_sha256"] != second.manifest["weights_sha256"]
    ddr = [to_verilog(StepvitAccel(export, lanes=LANES, weights="ddr")) for export in exports]
    assert ddr[0] == ddr[1]
    rom = [to_verilog(StepvitAccel(export, lanes=LANES)) for export in exports]
    assert rom[0] != rom[1]
    images = [design_image(export, lanes=LANES) for export in exports]
    assert images[0].image != images[1].image
    assert images[0].checksum != images[1].checksum


def test_the_shape_hash_follows_the_architecture_not_the_widths_or_values(
        exports: list[Export]) -> None:
    manifest = dict(exports[0].manifest)
    wider = {**manifest, "bit_widths": {**manifest["bit_widths"], "logit": 30}}
    other_mask = {**manifest, "timestep_mask": [[1, 0, 0]] * len(manifest["modules"]),
                  "weights_sha256": "0" * 64, "name": "other", "thresholds": {}}
    deeper = {**manifest, "t_max": manifest["t_max"] + 1}
    from stepvit.model.export import shape_hash_of

    # the widths are the design's separate record (widths_fit), not its shape
    assert shape_hash_of(wider) == shape_hash_of(manifest)
    assert shape_hash_of(other_mask) == shape_hash_of(manifest)
    assert shape_hash_of(deeper) != shape_hash_of(manifest)


def test_the_image_holds_what_the_roms_would(exports: list[Export]) -> None:
    export = exports[0]
    plan = CorePlan(export, lanes=LANES)
    image = design_image(export, lanes=LANES)
    unpacked = dict(zip((memory.name for memory in image.memories),
                        unpack_image(image.memories, image.image, image.data_width)))
    assert unpacked == {"weights": plan.weight_words, "biases": plan.bias_words,
                        "thresholds": plan.theta_words,
                        "stream_spike": plan.stream_spike_words,
                        "head_bias": [head_bias_word(plan)]}
    logit = export.bit_widths["logit"]
    assert [(head_bias_word(plan) >> (k * logit) & (1 << logit) - 1)
            - ((head_bias_word(plan) >> (k * logit + logit - 1) & 1) << logit)
            for k in range(export.arch["num_classes"])] == plan.head_bias


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, None])
def test_ddr_is_bit_exact_in_the_rom_designs_cycles(
        ddr_simulation: Simulation, exports: list[Export], images: np.ndarray,
        budget: int | None, tmp_path: Path) -> None:
    assert_bit_exact_in_rom_cycles(ddr_simulation, exports[0], images, budget, LANES,
                                   tmp_path / "rom")


@pytest.mark.slow
def test_a_flipped_byte_in_ddr_is_caught(ddr_simulation: Simulation, exports: list[Export],
                                         images: np.ndarray) -> None:
    export = exports[0]
    image = design_image(export, lanes=LANES)
    flip = len(image.image) // 3  # inside the weights
    with pytest.raises(SimulationFailed) as failure:
        ddr_simulation.run("ddr_weights", ddr_simulation.ddr_config(
            export, images, export.timestep_mask, flip=flip))
    assert failure.value.results["checksum"] != image.checksum
    assert failure.value.failures[0].startswith("WEIGHTS_CHECKSUM")


@pytest.mark.slow
def test_the_same_build_computes_another_exports_image(
        ddr_simulation: Simulation, exports: list[Export], images: np.ndarray) -> None:
    verilog = (ddr_simulation.build_dir / "rtl" / "stepvit_accel.v").read_bytes()
    for export in (exports[1], exports[0]):
        mask_rows = export.budget_mask(None)
        results = ddr_simulation.run("ddr_weights",
                                     ddr_simulation.ddr_config(export, images, mask_rows))
        assert not results["failures"]
        assert results["checksum"] == design_image(export, lanes=LANES).checksum
    assert (ddr_simulation.build_dir / "rtl" / "stepvit_accel.v").read_bytes() == verilog
    # the two exports' golden outputs differ, so each run proved its own image was used
    assert golden_packets(exports[0], images, exports[0].timestep_mask) != \
        golden_packets(exports[1], images, exports[1].timestep_mask)
