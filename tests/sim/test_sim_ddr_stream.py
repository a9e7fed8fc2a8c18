"""A ddr design that streams its weights during compute (``stream_weights``), under Icarus.

The core keeps no weight memory: each weight pass's words (its tile) come from the weight
image's ``weights`` region in the simulated DDR (the PYNQ-Z2's figures) into a
double-buffered tile buffer while the pass before computes. The design is bit-exact with
the golden model at budget 1 and at the full budget, reads every tile once per image,
waits for the tiles (``WEIGHT_STALLS``) only beyond the cycles of the design that holds
its weights, computes from what DDR holds at compute time (a byte flipped after the load
changes the results, not the checksum) and serves another export of its shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stepvit.model.export import Export, load_export
from stepvit.rtl.design_image import design_image
from stepvit.rtl.generate import memories_of, to_verilog
from stepvit.rtl.top import StepvitAccel
from stepvit.sim.runner import Simulation, SimulationFailed, golden_packets

SHAPE = (1, 4, 4)
#: Two seeds of the tiny export with equal proven widths: one shape, two models.
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
def stream_simulation(exports: list[Export],
                      tmp_path_factory: pytest.TempPathFactory) -> Simulation:
    return Simulation(exports[0], tmp_path_factory.mktemp("stream"), lanes=LANES,
                      weights="ddr", stream_weights=True)


def test_a_streaming_design_keeps_no_weight_memory_and_depends_only_on_the_shape(
        exports: list[Export]) -> None:
    designs = [StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True)
               for export in exports]
    verilog = [to_verilog(design) for design in designs]
    assert verilog[0] == verilog[1]
    names = [memory["name"] for memory in memories_of(verilog[0])]
    held_names = [memory["name"] for memory in memories_of(to_verilog(
        StepvitAccel(exports[0], lanes=LANES, weights="ddr")))]
    assert any("weights" in name for name in held_names)
    assert not any("weights" in name for name in names) and "banks" in names
    tiles = designs[0].core.tiles
    plan = designs[0].core.plan
    # one tile per weight pass, each the pass's words, covering the weight memory once
    assert sum(tiles.words) == len(plan.weight_words)
    assert tiles.depth < len(plan.weight_words)
    held = StepvitAccel(exports[0], lanes=LANES, weights="ddr").core.plan.memory_bits()
    assert held["weights"] == len(plan.weight_words) * 8 * LANES


def test_stream_weights_needs_a_ddr_design(exports: list[Export]) -> None:
    with pytest.raises(ValueError, match="stream_weights needs weights='ddr'"):
        StepvitAccel(exports[0], lanes=LANES, stream_weights=True)


def _cycle_words(results: dict, export: Export) -> list[int]:
    cycle_word = export.arch["num_classes"] + 1
    return [packet["words"][cycle_word] for packet in results["packets"]]


@pytest.mark.slow
@pytest.mark.parametrize("budget", [1, None])
def test_streamed_weights_are_bit_exact_and_read_once_per_image(
        stream_simulation: Simulation, exports: list[Export], images: np.ndarray,
        budget: int | None, tmp_path: Path) -> None:
    export = exports[0]
    mask_rows = export.budget_mask(budget)
    results = stream_simulation.run("ddr_weights",
                                    stream_simulation.ddr_config(export, images, mask_rows))
    assert not results["failures"]  # every packet is the golden model's
    image = design_image(export, lanes=LANES)
    beat = image.data_width // 8
    core = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True).core
    tiles = core.tiles
    tile_beats = [words * tiles.word_bytes // beat for words in tiles.words]
    # the load and every tile once per image; the next image's first tile may be on its
    # way when the bench counts (its second waits for the bank the last tile computes in)
    once = len(image.image) // beat + IMAGES * sum(tile_beats)
    assert once <= results["beats"] <= once + tile_beats[0]
    assert results["weight_stalls"] > 0
    rom = Simulation(export, tmp_path / "rom", lanes=LANES)
    rom_results = rom.run("stream_images", rom.config(
        images, expected=golden_packets(export, images, mask_rows), mask_rows=mask_rows))
    streamed, held = _cycle_words(results, export), _cycle_words(rom_results, export)
    assert all(s > h for s, h in zip(streamed, held))


@pytest.mark.slow
def test_a_byte_flipped_after_the_load_changes_the_results_not_the_checksum(
        stream_simulation: Simulation, exports: list[Export], images: np.ndarray) -> None:
    export = exports[0]
    image = design_image(export, lanes=LANES)
    # byte 0 of the image: the embedding's first weight word (lane 0, pixel 0), which the
    # second image's run fetches again after the flip
    with pytest.raises(SimulationFailed) as failure:
        stream_simulation.run("ddr_weights", stream_simulation.ddr_config(
            export, images, export.timestep_mask, flip_after_load=0))
    assert failure.value.results["checksum"] == image.checksum
    assert not any(line.startswith("WEIGHTS_CHECKSUM") for line in failure.value.failures)


@pytest.mark.slow
def test_the_same_streaming_build_computes_another_exports_image(
        stream_simulation: Simulation, exports: list[Export], images: np.ndarray) -> None:
    export = exports[1]
    results = stream_simulation.run("ddr_weights", stream_simulation.ddr_config(
        export, images, export.budget_mask(None)))
    assert not results["failures"]
    assert results["checksum"] == design_image(export, lanes=LANES).checksum
    assert golden_packets(exports[0], images, exports[0].timestep_mask) != \
        golden_packets(exports[1], images, exports[1].timestep_mask)


#: A convolutional stem (tests/sim/test_sim_ddr_stem.py's): its export's first weight tile
#: is block 0's q, which a mask can leave out (a patch embedding's tile is always needed).
STEM_SHAPE = (1, 9, 9)
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}


@pytest.fixture(scope="module")
def stem_export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    return load_export(random_export(tmp_path_factory.mktemp("stem_export"),
                                     image_shape=list(STEM_SHAPE), dim=8, stem=STEM, seed=0))


@pytest.mark.slow
def test_a_masked_module_costs_no_weight_traffic_and_a_stale_prediction_no_result(
        stem_export: Export, tmp_path: Path) -> None:
    """A stem export with block 0's attention masked at every step: its four tiles are
    never fetched for an image. The masks are written after the load, so the tile fetched
    ahead (block 0's q, the first) was chosen under the reset masks (every step active):
    the core discards it and seeks its own, and every packet is still the golden model's."""
    export = stem_export
    count = 3  # images: a masked tile fetched once per image would show twice
    images = np.random.default_rng(1).integers(0, 256, (count, *STEM_SHAPE), dtype=np.uint8)
    mask_rows = np.array(export.budget_mask(None))
    attention = export.stem_modules  # block 0's attention, after the stem's modules
    mask_rows[attention] = 0
    core = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True).core
    tiles = core.tiles
    attention_tiles = [k for k, p in enumerate(tiles.passes)
                       if core.plan.passes[p].get("module") == attention]
    assert attention_tiles[:4] == [0, 1, 2, 3]  # q, k, v, proj: the first tiles
    simulation = Simulation(export, tmp_path / "stream-stem", lanes=LANES, weights="ddr",
                            stream_weights=True)
    results = simulation.run("ddr_weights", simulation.ddr_config(
        export, images, mask_rows, late_masks=True))
    assert not results["failures"]
    image = design_image(export, lanes=LANES)
    beat = image.data_width // 8
    used = sum(words for k, words in enumerate(tiles.words) if k not in attention_tiles)
    per_image = used * tiles.word_bytes // beat
    # the load, tile 0 fetched ahead under the old masks, the used tiles of each image and
    # perhaps the next image's first used tile
    ahead = tiles.words[0] * tiles.word_bytes // beat
    least = len(image.image) // beat + ahead + count * per_image
    first_used = next(k for k in range(len(tiles.words)) if k not in attention_tiles)
    assert least <= results["beats"] <= least + tiles.words[first_used] * tiles.word_bytes // beat


@pytest.mark.slow
def test_split_tiles_are_bit_exact_and_smaller(exports: list[Export], images: np.ndarray,
                                               tmp_path: Path) -> None:
    """``tile_words`` 16: fc2's 16-input chunks one a tile, the 8-input layers' two; the
    banks hold 16 words rather than the largest layer's 32."""
    export = exports[0]
    whole = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True).core.tiles
    split = StepvitAccel(export, lanes=LANES, weights="ddr", stream_weights=True,
                         tile_words=16).core.tiles
    assert (whole.depth, split.depth) == (32, 16)
    assert sum(split.words) == sum(whole.words) and len(split.words) > len(whole.words)
    simulation = Simulation(export, tmp_path / "split", lanes=LANES, weights="ddr",
                            stream_weights=True, tile_words=16)
    for budget in (1, None):
        results = simulation.run("ddr_weights", simulation.ddr_config(
            export, images, export.budget_mask(budget)))
        assert not results["failures"]
