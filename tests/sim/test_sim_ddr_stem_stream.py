"""A chunk-major stem whose tap weights stream from DDR during compute, under Icarus.

A ddr design with ``stream_weights`` and ``stem_chunk_major`` (the stem export of
``test_sim_ddr_stem_chunk_major.py``: 9x9 images, 4 core lanes, 3 stem lanes) keeps no
weight memory in the core and no tap memory in the stem: the core's tiles and the stem's
(each ``(module, chunk)``'s run of every tap memory) come from the simulated DDR while the
pass before computes, through one arbiter on ``m_axi``. The design computes the golden
model's outputs bit for bit at budgets 1 and full, reads every tile once per image, and
computes from what DDR holds at compute time (a stem tap byte flipped after the load
changes the results, not the checksum).
"""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.model.export import Export, load_export
from stepvit.rtl.build_folder import record_design
from stepvit.rtl.design_image import design_image
from stepvit.rtl.generate import memories_of, to_verilog
from stepvit.rtl.sizing import stem_resources
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.stem_sizing import stem_bram36, stem_memories
from stepvit.rtl.stem_tiles import stem_tile_shapes
from stepvit.rtl.top import StepvitAccel
from stepvit.rtl.weight_image import image_layout
from stepvit.sim.runner import Simulation, SimulationFailed

SHAPE = (1, 9, 9)
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}
LANES = 4
STEM_LANES = 3
IMAGES = 2


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("stem_stream_export"),
                                     image_shape=list(SHAPE), dim=8, stem=STEM, seed=0))


def streamed(export: Export) -> StepvitAccel:
    return StepvitAccel(export, lanes=LANES, stem_lanes=STEM_LANES, stem_chunk_major=True,
                        weights="ddr", stream_weights=True)


def image_of(export: Export):
    return design_image(export, lanes=LANES, stem_lanes=STEM_LANES, stem_chunk_major=True)


@pytest.fixture(scope="module")
def simulation(export: Export, tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    build = tmp_path_factory.mktemp("ddr_stem_stream")
    record_design(build, export, LANES, stem_lanes=STEM_LANES)
    return Simulation(export, build, lanes=LANES, weights="ddr", stem_chunk_major=True,
                      stream_weights=True)


def test_the_stem_keeps_no_tap_memory_and_its_tiles_cover_the_taps(export: Export) -> None:
    core = streamed(export).core
    tiles = core.stem_tiles
    # the tap memories are the tile buffer's bank pairs: 2 x 8 words, not the 46 held
    taps = [(memory["width"], memory["depth"]) for memory in memories_of(
        to_verilog(streamed(export))) if memory["name"].startswith("tap")]
    assert taps == [(8 * STEM_LANES, 2 * tiles.depth)] * tiles.taps and tiles.taps == 9
    # one tile per (module, chunk); every tap memory's words once, in runs back to back
    layout = image_layout(core.parameter_memories, 64)
    taps = [r for r in layout.regions if r.memory.name.startswith("stem_tap")]
    assert sum(tiles.words) == taps[0].memory.depth
    assert [first for first in tiles.firsts] == [sum(tiles.words[:k])
                                                 for k in range(len(tiles.words))]
    assert tiles.tap_offsets == tuple(r.offset for r in taps)
    assert tiles.depth == 8  # stage 2's and the RPE's 8 input channels


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, None])
def test_streamed_stem_taps_are_bit_exact_and_read_once_per_image(
        simulation: Simulation, export: Export, budget: int | None) -> None:
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    mask_rows = export.budget_mask(budget)
    results = simulation.run("ddr_weights", simulation.ddr_config(export, images, mask_rows))
    assert not results["failures"]  # every packet is the golden model's, bit for bit
    image = image_of(export)
    assert results["checksum"] == image.checksum
    beat = image.data_width // 8
    core = streamed(export).core
    tiles, stem = core.tiles, core.stem_tiles
    # the core's tiles of the modules the masks run (the embedding's always: "once")
    rows = np.asarray(mask_rows).any(axis=1)
    passes = [core.plan.passes[p] for p in tiles.passes]
    core_beats = sum(words for words, descriptor in zip(tiles.words, passes)
                     if descriptor.get("once") and not descriptor.get("count_planes")
                     or rows[descriptor.get("module", 0)]) * tiles.word_bytes // beat
    assert all(rows[:len(STEM["stages"]) + 1])  # every stem module runs: every stem tile
    stem_beats = stem.bytes_per_image // beat
    once = len(image.image) // beat + IMAGES * (core_beats + stem_beats)
    # the fetches run ahead into the next image: at most its first tile of each
    ahead = (tiles.words[0] * tiles.word_bytes + stem.words[0] * stem.taps * stem.word_bytes)
    assert once <= results["beats"] <= once + ahead // beat
    assert results["stem_weight_stalls"] > 0
    print(f"budget {budget}: beats {results['beats']}, stalls {results['weight_stalls']} "
          f"(core), {results['stem_weight_stalls']} (stem), "
          f"cycles {[p['words'][export.arch['num_classes'] + 1] for p in results['packets']]}")


@pytest.mark.slow
def test_a_stem_tap_byte_flipped_after_the_load_changes_the_results(
        simulation: Simulation, export: Export) -> None:
    images = np.random.default_rng(1).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    image = image_of(export)
    core = streamed(export).core
    stem = core.stem_tiles
    # tap 4 (the kernel's centre) of stage 0's chunk 0, input channel 0: lane 0's weight
    flip = stem.tap_offsets[4] + stem.firsts[0] * stem.word_bytes
    with pytest.raises(SimulationFailed) as failure:
        simulation.run("ddr_weights", simulation.ddr_config(
            export, images, export.timestep_mask, flip_after_load=flip))
    assert failure.value.results["checksum"] == image.checksum
    assert not any(line.startswith("WEIGHTS_CHECKSUM") for line in failure.value.failures)


@pytest.mark.slow
def test_a_mispredicted_core_tile_is_sought_with_the_stem_streaming(
        simulation: Simulation, export: Export) -> None:
    """Block 0's attention masked at every step, the masks written after the load: the
    core's first tile, fetched ahead under the reset masks, is block 0's q, which no pass
    wants; the core discards it and seeks its own while the stem streams its taps too, and
    every packet is the golden model's (before the seek was shared it waited for ever)."""
    images = np.random.default_rng(2).integers(0, 256, (IMAGES, *SHAPE), dtype=np.uint8)
    mask_rows = np.array(export.budget_mask(None))
    mask_rows[export.stem_modules] = 0  # block 0's attention, after the stem's modules
    results = simulation.run("ddr_weights", simulation.ddr_config(
        export, images, mask_rows, late_masks=True))
    assert not results["failures"]
    assert results["weight_stalls"] > 0 and results["stem_weight_stalls"] > 0


def test_sizing_counts_the_stem_tile_banks_in_place_of_the_taps(export: Export) -> None:
    plan = StemPlan.from_export(export, lanes=STEM_LANES, chunk_major=True)
    tiles = streamed(export).core.stem_tiles
    memories = stem_memories(plan, export.bit_widths, streamed=True)
    assert [(memories[f"tap{tap}"].width, memories[f"tap{tap}"].depth)
            for tap in range(tiles.taps)] == stem_tile_shapes(tiles, STEM_LANES)
    held = stem_memories(plan, export.bit_widths)
    assert {name: m for name, m in memories.items() if not name.startswith("tap")} == {
        name: m for name, m in held.items() if not name.startswith("tap")}
    assert stem_resources(export, STEM_LANES, chunk_major=True, streamed=True)[2] == \
        stem_bram36(plan, export.bit_widths, streamed=True)
    with pytest.raises(ValueError, match="chunk-major"):
        stem_memories(StemPlan.from_export(export, lanes=STEM_LANES), export.bit_widths,
                      streamed=True)


def test_every_memory_placed_in_ultraram_is_marked_so(export: Export) -> None:
    # the sizing model's names (the core's and the stem's, "stem." before) are the RTL's:
    # every one placed is marked ram_style = "ultra" or "distributed" (rtl/ram_style.py),
    # none otherwise
    from stepvit.rtl.ram_style import DISTRIBUTED, ULTRA, ram_styles_of
    from stepvit.rtl.sizing import core_resources

    core = core_resources(export, LANES, stream_data_width=64, stem_chunk_major=True)
    stem = stem_resources(export, STEM_LANES, chunk_major=True, streamed=True)
    names = frozenset(core.memories) | frozenset(stem.memories)
    assert {"membranes", "stream", "tile_banks", "stem.bank0", "stem.tap0"} <= names
    mark = f"(* ram_style = \"{ULTRA}\" *)"
    marked = StepvitAccel(export, lanes=LANES, stem_lanes=STEM_LANES, stem_chunk_major=True,
                          weights="ddr", stream_weights=True,
                          ram_styles=ram_styles_of(ultraram=names))
    assert to_verilog(marked).count(mark) == len(names)
    one = to_verilog(StepvitAccel(export, lanes=LANES, stem_lanes=STEM_LANES,
                                  stem_chunk_major=True, weights="ddr", stream_weights=True,
                                  ram_styles={"stem.bank0": DISTRIBUTED}))
    assert one.count("(* ram_style = \"distributed\" *)") == 1 and mark not in one
    assert mark not in to_verilog(streamed(export))
