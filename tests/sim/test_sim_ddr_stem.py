"""A design with a convolutional stem that loads its parameters from DDR, under Icarus.

The stem engine's tap weights, biases, thresholds and spike values come from the same weight
image as the core's (``rtl/design_image.py``). Two random stem exports of one shape (the
tiny network with a three-stage stem and an RPE on 9x9 images, seeds 0 and 2: picked, as in
``test_sim_ddr.py``, because their proven ``bit_widths`` are equal; seeds 0-11 give three
sets of widths, seeds 0, 2, 6, 7 and 8 share one) have byte-identical ddr Verilog and
different images; the design computes the golden model's outputs bit for bit in the rom
design's cycles; one byte flipped in DDR is caught; the same build loaded with the other
export's image computes that export's. The export's copy of its image is named by the stem's
lanes too (``weights-lanes<P>-stem<S>-axi<W>.img``), so designs of other stem lanes keep
their images apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ddr_checks import assert_bit_exact_in_rom_cycles

from stepvit.model.export import Export, load_export
from stepvit.rtl.build_folder import export_image_path
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.design_image import design_image, image_contents, stem_plan_of
from stepvit.rtl.generate import to_verilog
from stepvit.rtl.stem_engine import STEM_BIASES, STEM_THRESHOLDS, stream_words
from stepvit.rtl.top import StepvitAccel
from stepvit.rtl.weight_image import unpack_image
from stepvit.sim.runner import Simulation, SimulationFailed, golden_packets

SHAPE = (1, 9, 9)
#: A stem of every kind of stage: pooled before its LIF, plain, pooled after, and the RPE.
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}
#: Two seeds of the stem export whose proven bit widths are equal: one shape, two models.
SEEDS = (0, 2)
LANES = 4
#: Stem lanes other than the core's: the stem's words are not the core's width.
STEM_LANES = 3
IMAGES = 2


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> list[Export]:
    folder = tmp_path_factory.mktemp("stem_exports")
    return [load_export(random_export(folder / f"seed{seed}", image_shape=list(SHAPE), dim=8,
                                      stem=STEM, seed=seed))
            for seed in SEEDS]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def ddr_simulation(exports: list[Export], tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    return Simulation(exports[0], tmp_path_factory.mktemp("ddr_stem"), lanes=LANES,
                      weights="ddr")


def test_the_stem_ddr_verilog_depends_only_on_the_shape(exports: list[Export]) -> None:
    first, second = exports
    assert first.bit_widths == second.bit_widths
    assert first.shape_hash == second.shape_hash
    assert first.config_hash != second.config_hash
    ddr = [to_verilog(StepvitAccel(export, lanes=LANES, stem_lanes=STEM_LANES, weights="ddr"))
           for export in exports]
    assert ddr[0] == ddr[1]
    images = [design_image(export, lanes=LANES, stem_lanes=STEM_LANES) for export in exports]
    assert images[0].image != images[1].image
    assert images[0].checksum != images[1].checksum
    # the stem's own memories differ too, not only the core's
    names = [memory.name for memory in images[0].memories]
    stem_words = [dict(zip(names, image.contents)) for image in images]
    assert all(stem_words[0][name] != stem_words[1][name]
               for name in ("stem_tap0", STEM_BIASES, STEM_THRESHOLDS))


def test_the_image_holds_the_stems_tables(exports: list[Export]) -> None:
    export = exports[0]
    image = design_image(export, lanes=LANES, stem_lanes=STEM_LANES)
    unpacked = unpack_image(image.memories, image.image, image.data_width)
    plan = CorePlan(export, lanes=LANES)
    stem = stem_plan_of(export, lanes=LANES, stem_lanes=STEM_LANES)
    assert unpacked == image_contents(plan, stem, export)
    names = [memory.name for memory in image.memories]
    assert names[:5] == ["weights", "biases", "thresholds", "stream_spike", "head_bias"]
    assert names[5:] == [f"stem_tap{tap}" for tap in range(9)] + [STEM_BIASES,
                                                                  STEM_THRESHOLDS]
    # the stem's spike values are the core's stream_spike words (the stem's tokens are
    # the core's lanes wide): one region serves both memories
    assert stream_words(np.asarray(export.arrays["stream_spike"]), LANES,
                        export.bit_widths["stream"]) == plan.stream_spike_words
    # a stem bias word holds the module's biases, lane 0 in the low bits
    contents = dict(zip(names, unpacked))
    sum_bits = max(export.bit_widths["embed_current"], export.bit_widths["current"])
    first = contents[STEM_BIASES][0]
    lanes = [(first >> (lane * sum_bits)) & ((1 << sum_bits) - 1) for lane in range(STEM_LANES)]
    signed = [value - (1 << sum_bits) if value >> (sum_bits - 1) else value for value in lanes]
    assert signed == [int(v) for v in export.arrays["stem.0.bias"][:STEM_LANES]]


def test_rtl_weights_ddr_writes_a_stem_exports_image(exports: list[Export],
                                                      tmp_path: Path) -> None:
    from stepvit.host import cli

    export = exports[0]
    assert cli.main(["rtl", str(export.path), "--build", str(tmp_path), "--lanes", str(LANES),
                     "--stem-lanes", str(STEM_LANES), "--weights", "ddr"]) == 0
    image = design_image(export, lanes=LANES, stem_lanes=STEM_LANES)
    assert (tmp_path / "weights.img").read_bytes() == image.image
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["weight_image"]["checksum"] == f"{image.checksum:016x}"
    assert [m["name"] for m in report["weight_image"]["memories"]][5:] == [
        f"stem_tap{tap}" for tap in range(9)] + [STEM_BIASES, STEM_THRESHOLDS]


def test_reusing_and_laying_out_a_stem_build_keep_its_stem_lanes(exports: list[Export],
                                                                 tmp_path: Path) -> None:
    """Another export of the shape is packed, and the overlay generated, at the build's
    stem lanes, not the core's (the image's tap words are ``8·stem_lanes`` bits)."""
    from stepvit.host import cli

    build = tmp_path / "build"
    assert cli.main(["rtl", str(exports[0].path), "--build", str(build), "--lanes", str(LANES),
                     "--stem-lanes", str(STEM_LANES), "--weights", "ddr"]) == 0
    assert cli.main(["rtl", str(exports[1].path), "--build", str(build), "--weights",
                     "ddr"]) == 0
    image = design_image(exports[1], lanes=LANES, stem_lanes=STEM_LANES)
    assert (build / "weights.img").read_bytes() == image.image
    assert json.loads((build / "design.json").read_text())["stem_lanes"] == STEM_LANES
    overlay = tmp_path / "overlay"
    assert cli.main(["overlay", str(exports[1].path), "--build", str(build), "--board",
                     "pynq-z2", "--out", str(overlay)]) == 0
    assert (overlay / "stepvit_accel.v").read_text() == (build / "stepvit_accel.v").read_text()
    assert json.loads((overlay / "design.json").read_text())["stem_lanes"] == STEM_LANES
    # the export's image is named by the stem lanes too, and overlay.json names it
    named = export_image_path(exports[1].path, LANES, 64, stem_lanes=STEM_LANES)
    assert named.name == f"weights-lanes{LANES}-stem{STEM_LANES}-axi64.img"
    assert named.read_bytes() == image.image
    info = json.loads((overlay / "overlay.json").read_text())
    assert (info["stem_lanes"], info["weight_image"], info["weight_image_bytes"]) == (
        STEM_LANES, named.name, len(image.image))


def test_designs_of_other_stem_lanes_write_and_name_their_own_images(
        exports: list[Export], tmp_path: Path) -> None:
    """One export built at 4 core lanes with the stem at 4 (not recorded: the core's) and at
    2: two images of different sizes side by side in the export's folder, each overlay
    naming its own, so neither is taken for the other (a stale image of another stem-lane
    count once reached the board under the same name and ended in an AXI error)."""
    from stepvit.host import cli

    export = exports[0]
    infos, images = {}, {}
    for stem_lanes in (LANES, 2):
        build, overlay = tmp_path / f"build{stem_lanes}", tmp_path / f"overlay{stem_lanes}"
        assert cli.main(["rtl", str(export.path), "--build", str(build), "--lanes", str(LANES),
                         *(["--stem-lanes", "2"] if stem_lanes != LANES else []),
                         "--weights", "ddr"]) == 0
        assert cli.main(["overlay", str(export.path), "--build", str(build), "--board",
                         "pynq-z2", "--out", str(overlay)]) == 0
        infos[stem_lanes] = json.loads((overlay / "overlay.json").read_text())
        images[stem_lanes] = (build / "weights.img").read_bytes()
    assert "stem_lanes" not in json.loads((tmp_path / f"build{LANES}/design.json").read_text())
    assert len(images[LANES]) != len(images[2])
    for stem_lanes, info in infos.items():
        named = export_image_path(export.path, LANES, 64, stem_lanes=stem_lanes)
        assert named.name == f"weights-lanes{LANES}-stem{stem_lanes}-axi64.img"
        assert info["weight_image"] == named.name and info["stem_lanes"] == stem_lanes
        assert named.read_bytes() == images[stem_lanes] == design_image(
            export, lanes=LANES, stem_lanes=stem_lanes).image
        assert info["weight_image_bytes"] == len(images[stem_lanes])
    assert not export_image_path(export.path, LANES, 64).exists()  # no name without the stem


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, None])
def test_stem_ddr_is_bit_exact_in_the_rom_designs_cycles(
        ddr_simulation: Simulation, exports: list[Export], images: np.ndarray,
        budget: int | None, tmp_path: Path) -> None:
    assert_bit_exact_in_rom_cycles(ddr_simulation, exports[0], images, budget, LANES,
                                   tmp_path / "rom")


@pytest.mark.slow
def test_a_flipped_stem_byte_in_ddr_is_caught(ddr_simulation: Simulation,
                                              exports: list[Export],
                                              images: np.ndarray) -> None:
    export = exports[0]
    image = design_image(export, lanes=LANES)
    flip = len(image.image) - image.data_width // 8  # inside the stem's thresholds
    with pytest.raises(SimulationFailed) as failure:
        ddr_simulation.run("ddr_weights", ddr_simulation.ddr_config(
            export, images[:1], export.timestep_mask, flip=flip))
    assert failure.value.results["checksum"] != image.checksum
    assert failure.value.failures[0].startswith("WEIGHTS_CHECKSUM")


@pytest.mark.slow
def test_the_same_stem_build_computes_another_exports_image(
        ddr_simulation: Simulation, exports: list[Export], images: np.ndarray) -> None:
    verilog = (ddr_simulation.build_dir / "rtl" / "stepvit_accel.v").read_bytes()
    export = exports[1]
    results = ddr_simulation.run("ddr_weights",
                                 ddr_simulation.ddr_config(export, images, export.timestep_mask))
    assert not results["failures"]
    assert results["checksum"] == design_image(export, lanes=LANES).checksum
    assert (ddr_simulation.build_dir / "rtl" / "stepvit_accel.v").read_bytes() == verilog
    # the two exports' golden outputs differ, so the run proved its own image was used
    assert golden_packets(exports[0], images, exports[0].timestep_mask) != \
        golden_packets(exports[1], images, exports[1].timestep_mask)
