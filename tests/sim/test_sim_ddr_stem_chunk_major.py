"""A chunk-major stem in a design that loads its parameters from DDR, under Icarus.

The chunk-major stem (``StemPlan(chunk_major=True)``) reads its tap words chunk by chunk, so
its weight image lays them out in that order (``rtl/design_image.py``) and is named apart
(``-chunkmajor``). The stem exports of ``test_sim_ddr_stem.py`` (9x9 images, a three-stage
stem and an RPE, seeds 0 and 2: one shape, equal widths) at 4 core lanes and 3 stem lanes
(ragged chunks of 4 and 8 channels): the image's taps are a chunk-major plan's, not the
step-major image's; the design computes the golden model's outputs bit for bit at budgets 1
and full and, loaded with the other export's image, that export's; ``stepvit rtl
--stem-chunk-major`` records the schedule, and reuse and ``stepvit overlay`` keep it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.model.export import Export, load_export
from stepvit.rtl.build_folder import export_image_path, record_design
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.design_image import design_image, image_contents, stem_contents, stem_plan_of
from stepvit.rtl.sizing import core_resources, estimate, stem_resources
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.stem_sizing import stem_bram36
from stepvit.rtl.synth import board_parameters
from stepvit.rtl.weight_image import unpack_image
from stepvit.sim.runner import Simulation, golden_packets

SHAPE = (1, 9, 9)
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}
SEEDS = (0, 2)
LANES = 4
STEM_LANES = 3
IMAGES = 2
#: The stem's nine tap memories follow the core's five in the image.
TAPS = slice(5, 14)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> list[Export]:
    folder = tmp_path_factory.mktemp("chunk_major_exports")
    return [load_export(random_export(folder / f"seed{seed}", image_shape=list(SHAPE), dim=8,
                                      stem=STEM, seed=seed))
            for seed in SEEDS]


def chunk_major_image(export: Export):
    return design_image(export, lanes=LANES, stem_lanes=STEM_LANES, stem_chunk_major=True)


def test_the_image_holds_the_taps_chunk_major(exports: list[Export]) -> None:
    export = exports[0]
    image = chunk_major_image(export)
    step_major = design_image(export, lanes=LANES, stem_lanes=STEM_LANES)
    plan = stem_plan_of(export, lanes=LANES, stem_lanes=STEM_LANES, chunk_major=True)
    assert plan.chunk_major
    assert unpack_image(image.memories, image.image, image.data_width) == image_contents(
        CorePlan(export, lanes=LANES), plan, export)
    assert image.contents[TAPS] == stem_contents(plan, export)[:9]
    # the same memories, the same words in another order: only the taps differ
    assert image.memories == step_major.memories
    assert image.contents[:5] == step_major.contents[:5]
    assert image.contents[14:] == step_major.contents[14:]
    assert image.contents[TAPS] != step_major.contents[TAPS]
    assert all(sorted(a) == sorted(b)
               for a, b in zip(image.contents[TAPS], step_major.contents[TAPS]))
    assert image.image != step_major.image


def test_rtl_records_reuses_and_lays_out_the_chunk_major_stem(
        exports: list[Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = exports
    build = tmp_path / "build"
    assert cli.main(["rtl", str(first.path), "--build", str(build), "--lanes", str(LANES),
                     "--stem-lanes", str(STEM_LANES), "--weights", "ddr",
                     "--stem-chunk-major"]) == 0
    assert json.loads(capsys.readouterr().out)["stem_chunk_major"] is True
    record = json.loads((build / "design.json").read_text())
    assert (record["stem_lanes"], record["stem_chunk_major"]) == (STEM_LANES, True)
    assert json.loads((build / "report.json").read_text())["stem_chunk_major"] is True
    assert (build / "weights.img").read_bytes() == chunk_major_image(first).image
    named = export_image_path(first.path, LANES, 64, stem_chunk_major=True,
                              stem_lanes=STEM_LANES)
    assert named.name == f"weights-lanes{LANES}-stem{STEM_LANES}-axi64-chunkmajor.img"
    assert named.read_bytes() == chunk_major_image(first).image
    assert not export_image_path(first.path, LANES, 64, stem_lanes=STEM_LANES).exists()
    assert not export_image_path(first.path, LANES, 64, stem_chunk_major=True).exists()
    verilog = (build / "stepvit_accel.v").read_text()
    # another export of the shape, no flag: the build's Verilog and schedule are kept
    assert cli.main(["rtl", str(second.path), "--build", str(build), "--weights", "ddr"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is True
    assert (build / "stepvit_accel.v").read_text() == verilog
    assert json.loads((build / "design.json").read_text())["stem_chunk_major"] is True
    assert (build / "weights.img").read_bytes() == chunk_major_image(second).image
    assert export_image_path(second.path, LANES, 64, stem_chunk_major=True,
                             stem_lanes=STEM_LANES).read_bytes() == chunk_major_image(second).image
    overlay = tmp_path / "overlay"
    assert cli.main(["overlay", str(second.path), "--build", str(build), "--board", "pynq-z2",
                     "--out", str(overlay)]) == 0
    assert (overlay / "stepvit_accel.v").read_text() == verilog
    assert json.loads((overlay / "design.json").read_text())["stem_chunk_major"] is True
    info = json.loads((overlay / "overlay.json").read_text())
    assert info["stem_chunk_major"] is True
    assert info["stem_lanes"] == STEM_LANES
    assert info["weight_image"] == named.name
    assert info["weight_image_bytes"] == len(named.read_bytes())


def test_a_step_major_build_refuses_the_flag(exports: list[Export], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    first, second = exports
    build = tmp_path / "build"
    assert cli.main(["rtl", str(first.path), "--build", str(build), "--lanes", str(LANES),
                     "--weights", "ddr"]) == 0
    assert "stem_chunk_major" not in json.loads((build / "design.json").read_text())
    capsys.readouterr()
    assert cli.main(["rtl", str(second.path), "--build", str(build), "--weights", "ddr",
                     "--stem-chunk-major"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--stem-chunk-major asks for one that runs chunk by" in errors[0]


def test_the_flag_needs_a_stem(tmp_path: Path, random_export,
                               capsys: pytest.CaptureFixture) -> None:
    plain = random_export(tmp_path / "plain")
    assert cli.main(["rtl", str(plain), "--build", str(tmp_path / "build"),
                     "--stem-chunk-major"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"stepvit rtl: error: --stem-chunk-major: {plain} has no convolutional "
                      f"stem"]


def test_sizing_counts_the_chunk_major_stem(exports: list[Export]) -> None:
    export, board = exports[0], board_parameters("pynq-z2")
    plan = StemPlan.from_export(export, lanes=STEM_LANES, chunk_major=True)
    assert stem_resources(export, STEM_LANES, chunk_major=True)[2] == stem_bram36(
        plan, export.bit_widths)
    chunk_major = estimate(export, LANES, board, stem_lanes=STEM_LANES, stem_chunk_major=True)
    assert chunk_major.bram36 == (core_resources(export, LANES)[2]
                                  + stem_resources(export, STEM_LANES, chunk_major=True)[2])


@pytest.fixture(scope="module")
def simulation(exports: list[Export], tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    build = tmp_path_factory.mktemp("ddr_chunk_major")
    record_design(build, exports[0], LANES, stem_lanes=STEM_LANES)  # the stem's lanes
    return Simulation(exports[0], build, lanes=LANES, weights="ddr", stem_chunk_major=True)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "budget"), [(0, 1), (0, None), (1, None)])
def test_a_chunk_major_stem_from_ddr_is_bit_exact(simulation: Simulation,
                                                  exports: list[Export], seed: int,
                                                  budget: int | None) -> None:
    """Budgets 1 and full of the first export; then the same build loads the second's."""
    export = exports[seed]
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    mask_rows = export.budget_mask(budget)
    results = simulation.run("ddr_weights", simulation.ddr_config(export, images, mask_rows))
    assert not results["failures"]  # every packet is the golden model's, bit for bit
    image = chunk_major_image(export)
    assert results["checksum"] == image.checksum
    assert results["beats"] == len(image.image) // (image.data_width // 8)
    assert len(results["packets"]) == IMAGES
    if seed:  # the two exports' outputs differ: the run used its own image
        assert golden_packets(exports[0], images, mask_rows) != golden_packets(
            export, images, mask_rows)


def test_the_chunk_major_pace_counts_its_own_passes(tmp_path: Path) -> None:
    """On golden-vector images a chunk-major stem (several chunks a module) is slower."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "rtl"))  # test_sizing's helpers
    from test_sizing import with_golden_vectors
    from test_stem_engine import stem_export

    from stepvit.model.export.vectors import load_golden_vectors
    from stepvit.rtl.pace import sample_pace

    export = with_golden_vectors(stem_export(tmp_path, 0)[0])
    step_major = sample_pace(export, stem_lanes=range(1, 3))
    chunk_major = sample_pace(export, stem_lanes=range(1, 3), chunk_major=True)
    vectors = load_golden_vectors(export)
    assert len(vectors.images) == chunk_major.images
    for lanes in (1, 2):
        assert chunk_major.stem_cycles[lanes] > step_major.stem_cycles[lanes]
