"""Choosing the lanes for a board: block RAM from the memories' shapes, dense events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host import cli
from stepvit.model.export import load_export
from stepvit.rtl import sizing
from stepvit.rtl.core_plan import CoreGeometry, CorePlan
from stepvit.rtl.sizing import (
    choose_lanes,
    dense_events,
    estimate,
    memory_bram36,
    memory_lutram_luts,
    memory_shapes,
)
from stepvit.rtl.stream_ddr import WRITE_FIFO_WORDS, StreamDdr
from stepvit.rtl.synth import board_parameters

SHAPE = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
             num_classes=3, t_max=3)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, random_export):
    return random_export(tmp_path_factory.mktemp("sizing"), seed=2, **SHAPE)


def test_block_ram_of_a_memory() -> None:
    assert memory_bram36(128, 4224) == 18.0  # 4 x 9 blocks of 36 x 512, two to a BRAM36
    assert memory_bram36(64, 196) == 1.0
    assert memory_bram36(128, 49) == 0.0  # distributed RAM
    assert memory_bram36(336, 72, rom=True) == 0.0  # constants: logic
    assert memory_bram36(336, 72) == 5.0


def test_distributed_ram_as_yosys_maps_it() -> None:
    # the Fashion-MNIST export at 64 lanes, cell for cell as Yosys mapped it (2026-11-30)
    assert memory_lutram_luts(160, 64) == 4 * 54  # a KV memory: RAM64M, 3 bits each
    assert memory_lutram_luts(23 * 64, 16) == 4 * 246  # membranes: RAM32M, 6 bits each
    assert memory_lutram_luts(392, 16, granularity=8) == 4 * 49 * 2  # patches, bytewise
    assert memory_lutram_luts(128, 64, granularity=64) == 4 * 2 * 22  # a hidden spike map
    assert memory_lutram_luts(128, 65) == memory_lutram_luts(128, 16, rom=True) == 0


def test_one_kv_memory_per_parallel_head(export_dir) -> None:
    export = load_export(export_dir)
    attention = export.bit_widths["attention"]
    one_head = memory_shapes(CorePlan(export, lanes=4))
    both = memory_shapes(CorePlan(export, lanes=8))
    assert [name for name in one_head if name.startswith("kv")] == ["kv0"]
    assert one_head["kv0"] == (4 * attention, 3 * 8)  # head_dim wide, T x dim rows
    assert both["kv0"] == both["kv1"] == (4 * attention, 3 * 4)  # a head's rows each


def test_dense_events_fall_with_lanes_until_the_head_width(export_dir) -> None:
    export = load_export(export_dir)
    events = {lanes: dense_events(CoreGeometry.from_export(export, lanes=lanes))
              for lanes in (1, 2, 3, 4, 8, 16)}
    assert events[1] > events[2] > events[4] > events[8] > events[16]
    assert events[3] > events[4]  # 3 lanes: ragged chunks cost whole events


def test_the_fastest_fitting_design_is_chosen(export_dir) -> None:
    export = load_export(export_dir)
    board = board_parameters("pynq-z2")
    chosen, estimates = choose_lanes(export, board)
    lanes = chosen.lanes
    assert [e.lanes for e in estimates] == list(range(1, 17))
    assert chosen.stem_lanes is None
    best = min(e.dense_events for e in estimates if e.fits)
    assert estimate(export, lanes, board).dense_events == best
    assert all(e.lanes >= lanes for e in estimates if e.fits and e.dense_events == best)
    tiny_board = {**board, "name": "tiny", "resources": {**board["resources"], "lut": 1000}}
    with pytest.raises(ValueError, match=r"^no lane count fits the board tiny"):
        choose_lanes(export, tiny_board)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_rtl_board_picks_the_lanes_and_lanes_overrides(export_dir, tmp_path, capsys) -> None:
    assert cli.main(["rtl", str(export_dir), "--build", str(tmp_path / "a"),
                     "--board", "pynq-z2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lanes"] == summary["sizing"]["fastest_fitting_lanes"] == 16
    assert summary["sizing"]["estimate"]["fits"]
    assert cli.main(["rtl", str(export_dir), "--build", str(tmp_path / "b"),
                     "--board", "pynq-z2", "--lanes", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lanes"] == 3 and summary["sizing"]["fastest_fitting_lanes"] == 16


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_rtl_board_builds_lanes_asked_for_that_fit_no_budget(export_dir, tmp_path,
                                                             capsys) -> None:
    # a board too small for any lane count: --board alone refuses, --lanes builds and warns
    folder = tmp_path / "tiny"
    folder.mkdir()
    text = (Path(cli.__file__).resolve().parents[1] / "boards" / "pynq-z2"
            / "board.yaml").read_text()
    (folder / "board.yaml").write_text(text.replace("lut: 53200", "lut: 1000"))
    assert cli.main(["rtl", str(export_dir), "--build", str(tmp_path / "a"),
                     "--board", str(folder)]) == 2
    assert "no lane count fits the board" in capsys.readouterr().err
    assert cli.main(["rtl", str(export_dir), "--build", str(tmp_path / "b"),
                     "--board", str(folder), "--lanes", "3"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["lanes"] == 3 and summary["sizing"]["fastest_fitting_lanes"] is None
    assert not summary["sizing"]["estimate"]["fits"]
    assert "3 lanes do not fit" in captured.err and "generating them" in captured.err


def test_a_stem_design_weighs_every_pair_of_core_and_stem_lanes(tmp_path) -> None:
    from test_stem_engine import stem_export

    export, _ = stem_export(tmp_path, 0)  # stem of 3 then 4 channels, dim 4, mlp 4
    board = board_parameters("pynq-z2")
    chosen, estimates = choose_lanes(export, board)
    assert {(e.lanes, e.stem_lanes) for e in estimates} == {
        (lanes, stem) for lanes in range(1, 5) for stem in range(1, 5)}
    fastest = min(e.dense_events for e in estimates if e.fits)
    assert chosen.dense_events == fastest
    # the slower of the core and the stem sets the pace (they overlap)
    pair = estimate(export, 2, board, stem_lanes=3)
    assert pair.stem_lanes == 3
    assert pair.dense_events == max(sizing.core_resources(export, 2)[0],
                                    sizing.stem_resources(export, 3)[0])
    assert pair.lut == sizing.core_resources(export, 2)[1] + sizing.stem_resources(export, 3)[1]
    # the core's weights streamed and the stem chunk-major: the stem's taps stream too
    for streamed in ({}, {"stream_data_width": 64}):
        both = {**streamed, "stem_chunk_major": True}
        taps_stream = bool(streamed)
        stem = sizing.stem_resources(export, 3, chunk_major=True, streamed=taps_stream)
        core = sizing.core_resources(export, 2, stem_chunk_major=True, **streamed)
        pair = estimate(export, 2, board, stem_lanes=3, **both)
        assert (pair.lut, pair.bram36) == (core[1] + stem[1], core[2] + stem[2])
        picked = {(e.lanes, e.stem_lanes): e for e in choose_lanes(export, board, **both)[1]}
        assert (picked[2, 3].lut, picked[2, 3].bram36) == (pair.lut, pair.bram36)
    assert sizing.stem_resources(export, 3, chunk_major=True, streamed=True) != \
        sizing.stem_resources(export, 3, chunk_major=True)


def with_golden_vectors(export, images=5, seed=0):
    """Write golden vectors of random images into ``export``, as `stepvit export` does."""
    import numpy as np
    import torch

    from stepvit.model.export_cli import write_golden_vectors_of
    from stepvit.model.golden import GoldenModel

    pixels = np.random.default_rng(seed).integers(0, 256, (images, *export.arch["image_shape"]),
                                                  dtype=np.uint8)
    write_golden_vectors_of(export.path / "golden_vectors.npz", GoldenModel(export),
                            torch.from_numpy(pixels), torch.zeros(images, dtype=torch.int64))
    return export


def test_with_sample_images_the_picker_ranks_by_their_cycles(tmp_path) -> None:
    from test_stem_engine import stem_export

    from stepvit.rtl.pace import SamplePace, sample_pace

    export = with_golden_vectors(stem_export(tmp_path, 0)[0])
    board = board_parameters("pynq-z2")
    pace = sample_pace(export)
    assert pace is not None and pace.images > 0 and pace.core_work > 0
    assert sorted(pace.stem_cycles) == [1, 2, 3, 4]
    chosen, estimates = choose_lanes(export, board, pace)
    assert chosen.sample_cycles == min(e.sample_cycles for e in estimates if e.fits)
    pair = next(e for e in estimates if (e.lanes, e.stem_lanes) == (2, 3))
    core = pace.core_cycles(sizing.core_resources(export, 2)[0],
                            sizing.core_resources(export, 1)[0])
    assert pair.sample_cycles == max(core, pace.stem_cycles[3])
    # a stem that the images keep busy is given more lanes than the dense model gives it
    slow_stem = SamplePace(pace.images, 1.0, {lanes: 1e6 / lanes for lanes in range(1, 5)})
    assert choose_lanes(export, board, slow_stem)[0].stem_lanes == 4
    idle_stem = SamplePace(pace.images, pace.core_work, {lanes: 0.0 for lanes in range(1, 5)})
    assert choose_lanes(export, board, idle_stem)[0].stem_lanes == 1


def test_the_stem_pace_is_the_engines_exact_cycle_model(tmp_path) -> None:
    from test_stem_engine import stem_export

    from stepvit.model.export.vectors import load_golden_vectors
    from stepvit.rtl.pace import sample_pace
    from stepvit.sim.stem_cycles import stem_cycles

    export = with_golden_vectors(stem_export(tmp_path, 1)[0], seed=1)
    images = load_golden_vectors(export).images
    pace = sample_pace(export, stem_lanes=range(2, 4))
    for lanes in (2, 3):
        full = stem_cycles(str(export.path), lanes=lanes, images=images,
                           budgets=[export.t_max])[0]
        assert pace.stem_cycles[lanes] == pytest.approx(full["cycles"])


def test_without_golden_vectors_the_picker_keeps_dense_events(export_dir, tmp_path) -> None:
    import shutil

    from stepvit.rtl.pace import sample_pace

    bare = tmp_path / "bare"
    shutil.copytree(export_dir, bare)
    (bare / "golden_vectors.npz").unlink(missing_ok=True)
    assert sample_pace(load_export(bare)) is None
    assert sample_pace(with_golden_vectors(load_export(bare))) is not None


def test_stem_vectors_without_their_map_counts_leave_the_picker_on_dense_events(
        tmp_path) -> None:
    import numpy as np
    from test_stem_engine import stem_export

    from stepvit.model.export.vectors import STEM_MAP_KEYS
    from stepvit.rtl.pace import sample_pace

    export = with_golden_vectors(stem_export(tmp_path, 0)[0])
    assert sample_pace(export) is not None
    path = export.path / "golden_vectors.npz"
    with np.load(path) as archive:
        kept = {key: archive[key] for key in archive.files if key not in STEM_MAP_KEYS}
    np.savez(path, **kept)  # the vectors of an export written before the counts
    assert sample_pace(load_export(export.path)) is None
    board = board_parameters("pynq-z2")
    assert choose_lanes(export, board, None)[0].sample_cycles is None


@pytest.mark.parametrize("lanes", [1, 3, 8, 16])
def test_the_sizing_plan_without_contents_has_the_memories_shapes(export_dir, lanes) -> None:
    export = load_export(export_dir)
    full, light = CorePlan(export, lanes=lanes), CorePlan(export, lanes=lanes, contents=False)
    assert memory_shapes(light) == memory_shapes(full)
    assert light.passes == full.passes
    assert any(full.weight_words) and not any(light.weight_words)


def test_a_core_that_streams_its_weights_sizes_two_tile_banks_not_the_weights(
        tmp_path, random_export) -> None:
    """A wider network (dim 64, mlp 256, two blocks): its weights are 120 KB, its largest
    tile 8 KB at 32 lanes; the streamed core's block RAM counts the two banks of the tile
    buffer in their place (words padded to whole 64-bit beats)."""
    export = load_export(random_export(tmp_path, seed=0, image_shape=[1, 16, 16], patch=4,
                                       dim=64, heads=4, depth=2, mlp_dim=256, num_classes=10,
                                       t_max=4))
    plan = CorePlan(export, lanes=32, contents=False)
    streamed_plan = CorePlan(export, lanes=32, contents=False, tile_words=256)
    held = memory_shapes(plan)
    streamed = memory_shapes(streamed_plan, stream_data_width=64)
    assert "weights" in held and "weights" not in streamed
    assert streamed["tile_banks"] == (256, 2 * streamed_plan.tile_depth)
    assert streamed_plan.tile_depth == 256  # fc2: 256 inputs, one chunk a tile
    assert {k: v for k, v in streamed.items() if k != "tile_banks"} == \
        {k: v for k, v in held.items() if k != "weights"}
    held_core = sizing.core_resources(export, 32)
    streamed_core = sizing.core_resources(export, 32, stream_data_width=64, tile_words=256)
    assert streamed_core.bram36 < held_core.bram36
    assert streamed_core.lut == held_core.lut + sizing.STREAM_LUTS
    with pytest.raises(ValueError, match="needs 256 weight words, more than tile_words"):
        sizing.core_resources(export, 32, stream_data_width=64, tile_words=255)


def test_a_board_with_ultraram_takes_the_deep_memories_there(tmp_path, random_export) -> None:
    """256 tokens of 64 channels at 4 steps: the residual stream is 8,192 words of 8 lanes,
    24 BRAM36 or four URAM288 (cheaper by Yosys's costs); the spike maps stay in block RAM.
    The PYNQ-Z2 has no UltraRAM, so it takes none."""
    export = load_export(random_export(tmp_path, seed=0, image_shape=[1, 32, 32], patch=2,
                                       dim=64, heads=2, depth=1, mlp_dim=64, num_classes=3,
                                       t_max=4))
    plan = CorePlan(export, lanes=8, contents=False)
    width, depth = memory_shapes(plan)["stream"]
    assert (width, depth) == (104, 8192)  # 8 lanes of 13 bits
    assert sizing.memory_blocks(width, depth) == (24.0, 0)
    assert sizing.memory_blocks(width, depth, uram=True) == (0.0, 4)
    kv260, pynq = board_parameters("kv260"), board_parameters("pynq-z2")
    on_kv260, on_pynq = estimate(export, 8, kv260), estimate(export, 8, pynq)
    assert on_pynq.uram == 0 and on_kv260.uram >= 4
    assert on_kv260.bram36 <= on_pynq.bram36 - 24
    assert on_kv260.as_dict()["uram"] == on_kv260.uram
    assert on_kv260.memory_text().endswith(f", {on_kv260.uram} URAM288")
    assert "URAM" not in on_pynq.memory_text()
    # held to the block RAM's fraction of the board's UltraRAM, as `stepvit synth` holds it
    tight = {**kv260, "resources": {**kv260["resources"], "uram": 1}}
    assert not estimate(export, 8, tight).fits


def test_the_placement_fills_the_ultraram_with_what_saves_the_most_block_ram() -> None:
    """Yosys's own choice first (the deep stream), then the RAMs that save the most block
    RAM per URAM288 (kv: 18 BRAM36 or 6 URAM288, then membranes: 19 or 10), while the
    UltraRAM stays within its budget, and only where it saves."""
    shape = sizing.MemoryShape
    memories = {"stream": shape(608, 3072), "membranes": shape(672, 768),
                "kv0": shape(416, 1536), "biases": shape(576, 432, rom=True),
                "bank0": shape(228, 121), "small": shape(32, 32)}
    board = {"name": "b", "resources": {"lut": 10**6, "bram36": 100, "uram": 64},
             "budget": {"lut_fraction": 0.7, "bram_fraction": 0.8}}
    assert sizing.memory_resources(memories, set()) == (51 + 19 + 18 + 8 + 3.5, 0)
    # nothing else saves: the biases are a ROM, bank0 takes more URAM288 than RAMB36
    assert sizing.place_ultraram(memories, board) == {"stream", "kv0", "membranes"}
    assert sizing.memory_resources(memories, {"stream", "kv0", "membranes"}) == (11.5, 25)
    few = {**board, "resources": {**board["resources"], "uram": 20}}  # 16 URAM288: no room
    assert sizing.place_ultraram(memories, few) == {"stream", "kv0"}  # 9 + 6 of 16
    # Yosys puts the stream there whatever the budget (its costs); nothing more then fits
    none = {**board, "resources": {**board["resources"], "uram": 10}}  # 8 URAM288
    assert sizing.place_ultraram(memories, none) == {"stream"}
    assert sizing.place_ultraram(memories, board_parameters("pynq-z2")) == frozenset()


def test_rtl_for_a_board_with_ultraram_marks_the_memories_it_places_there(
        tmp_path, random_export, capsys) -> None:
    """`stepvit rtl --board kv260` builds the placement the sizing chose: the deep stream
    (2,048 words) marked ram_style = "ultra" in the Verilog and listed in the summary (a
    board without UltraRAM places nothing there:
    test_the_placement_fills_the_ultraram_with_what_saves_the_most_block_ram)."""
    export = random_export(tmp_path / "export", seed=0, image_shape=[1, 32, 32], patch=4,
                           dim=64, heads=2, depth=1, mlp_dim=64, num_classes=3, t_max=4)
    assert cli.main(["rtl", str(export), "--build", str(tmp_path / "kv"), "--board", "kv260",
                     "--lanes", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "stream" in summary["ultraram"]
    assert summary["ultraram"] == sorted(summary["sizing"]["estimate"]["ultraram"])
    verilog = (tmp_path / "kv" / "stepvit_accel.v").read_text()
    assert verilog.count('(* ram_style = "ultra" *)') == len(summary["ultraram"])


def test_a_granule_takes_whole_bytes_in_ultraram_too() -> None:
    # 16 granules of 12 bits: 18 bits each (bytes of 9) or 16 (bytes of 8): four a URAM288
    assert sizing.uram_blocks(192, 1024, 12) == 4 and sizing.uram_blocks(192, 1024) == 3
    assert sizing.uram_blocks(48, 4096, 12) == 1 and sizing.uram_blocks(96, 8192, 12) == 4
    assert sizing.MemoryShape(192, 1024, granularity=12).uram == 4


@pytest.fixture(scope="module")
def spikformer(tmp_path_factory):
    """A random export of the paper's network (``model/configs/spikformer-4-384.yaml``)."""
    config = Path(__file__).parents[2] / "model" / "configs" / "spikformer-4-384.yaml"
    out = tmp_path_factory.mktemp("spikformer")
    assert cli.main(["random-export", "--config", str(config), "--out", str(out),
                     "--vectors", "0"]) == 0
    return load_export(out)


#: Yosys's LUTs (``stepvit synth``, with distributed RAM) of Spikformer-4-384's designs on
#: the PYNQ-Z2, everything streamed, the stream in DDR, 64-bit spike words, no RAM moved to
#: LUTs: (lanes, stem lanes) -> LUTs (docs/results/2026-12-06-stem-tables.md).
SPIKFORMER_YOSYS_LUTS = {(8, 4): 29_619, (8, 8): 34_511, (16, 8): 36_978}


def test_the_lut_model_is_yosys_within_one_percent_on_the_papers_network(spikformer) -> None:
    for (lanes, stem_lanes), luts in SPIKFORMER_YOSYS_LUTS.items():
        core = sizing.core_resources(spikformer, lanes, stream_data_width=64, tile_words=1536,
                                     spike_word_bits=64, stem_chunk_major=True,
                                     stream_ddr=True)
        stem = sizing.stem_resources(spikformer, stem_lanes, chunk_major=True, streamed=True)
        assert core.lut + stem.lut == pytest.approx(luts, rel=0.01), (lanes, stem_lanes)


def test_the_papers_network_fits_the_pynq_z2_at_8_4_lanes_with_its_activations_in_ddr(
        spikformer) -> None:
    """The README's claim: by the sizing model, with the residual stream in DDR (its unit
    and FIFOs counted) and the spike maps and the stem's output maps too, Spikformer-4-384
    would fit the PYNQ-Z2 at 8 + 4 and at 4 + 6 lanes (at 8 + 4 with the stem's maps alone,
    some of its RAMs in LUTs); at 16 + 12 (the lanes 5.3 M cycles an image needs) its LUTs
    would not."""
    export = spikformer
    board = board_parameters("pynq-z2")
    budget = board["budget"]
    lut_budget = budget["lut_fraction"] * board["resources"]["lut"]
    bram_budget = budget["bram_fraction"] * board["resources"]["bram36"]
    streamed = {"stream_data_width": 64, "tile_words": 1536}

    def resources(lanes: int, stem_lanes: int) -> tuple[float, float, float]:
        core = sizing.core_resources(export, lanes, **streamed, spike_word_bits=64,
                                     stem_chunk_major=True, stream_ddr=True)
        stem = sizing.stem_resources(export, stem_lanes, chunk_major=True, streamed=True)
        memories = {**core.memories, **stem.memories}
        left = sum(m.bram36 for name, m in memories.items()
                   if not sizing.activation_memory(name))
        return (core.lut + stem.lut,
                sum(m.bram36 for m in memories.values()), left)

    lut, bram, left = resources(8, 4)
    assert bram > bram_budget >= left and lut <= lut_budget
    # the README's: at 8 + 4 the stem's maps alone in DDR would do, with RAMs moved to LUTs
    core = sizing.core_resources(export, 8, **streamed, spike_word_bits=64,
                                 stem_chunk_major=True, stream_ddr=True)
    stem = sizing.stem_resources(export, 4, chunk_major=True, streamed=True)
    on_chip = {name: m for name, m in {**core.memories, **stem.memories}.items()
               if not (name.startswith("stem.") and name.endswith("_out_map"))}
    moved = sizing.place_distributed(on_chip, board)
    assert sizing.memory_resources(on_chip, (), moved)[0] <= bram_budget
    assert (core.lut + stem.lut + sum(on_chip[name].distributed_luts for name in moved)
            <= lut_budget)
    lut, bram, left = resources(4, 6)  # the stem's 6 lanes: about 10 M cycles an image
    assert bram > bram_budget >= left and lut <= lut_budget
    lut, _, left = resources(16, 12)
    assert lut > lut_budget


def test_the_cores_pass_table_counts_as_block_ram_where_yosys_puts_it_there(spikformer) -> None:
    """The core's table of pass descriptors is a ROM; Spikformer-4-384 at 8 lanes has 594
    passes, a 1,024-word table whose 95 used bits Yosys puts in 3 BRAM36 (the model ran 3.5
    under Yosys without it); at 32 lanes 162 passes, 256 words, logic."""
    options = dict(stream_data_width=64, tile_words=1536, spike_word_bits=64,
                   stem_chunk_major=True, stream_ddr=True)
    eight = sizing.core_resources(spikformer, 8, **options).memories["pass_rom"]
    assert (eight.width, eight.depth, eight.rom, eight.bram36) == (95, 1024, True, 3.0)
    assert "pass_rom" not in sizing.core_resources(spikformer, 32, **options).memories


def test_the_stems_maps_in_ddr_trade_the_maps_for_two_fifos_and_fit_the_pynq_z2(
        spikformer) -> None:
    """With ``stem_maps_ddr`` the stem keeps no emitted map but a staging FIFO and a read
    FIFO (rtl/stem_map_ddr.py); the README's claim: Spikformer-4-384 at 8 + 4 to 8 + 7
    lanes then fits the PYNQ-Z2 by the model, its RAMs in LUTs leaving the placement's
    margin, and 8 + 8 does not."""
    export = spikformer
    on_chip = sizing.stem_resources(export, 4, chunk_major=True, streamed=True)
    in_ddr = sizing.stem_resources(export, 4, chunk_major=True, streamed=True, maps_ddr=True)
    maps = {name for name in on_chip.memories if name.endswith("_out_map")}
    assert len(maps) == 5 and not maps & set(in_ddr.memories)
    fifos = set(in_ddr.memories) - set(on_chip.memories)
    assert fifos == {"stem.map_staged", "stem.map_reads"}
    assert in_ddr.bram36 == (on_chip.bram36 - sum(on_chip.memories[n].bram36 for n in maps)
                             + sum(in_ddr.memories[n].bram36 for n in fifos))
    board = board_parameters("pynq-z2")
    bram_budget = board["budget"]["bram_fraction"] * board["resources"]["bram36"]
    options = dict(stem_lanes=4, stream_data_width=64, tile_words=1536,
                   stem_chunk_major=True, spike_word_bits=64, stream_ddr=True)
    before = estimate(export, 8, board, **options)
    after = estimate(export, 8, board, **options, stem_maps_ddr=True)
    assert not before.fits and after.fits
    assert after.bram36 <= bram_budget * (1 - sizing.PLACEMENT_MARGIN)
    # the picker's choice on the PYNQ-Z2 (the README's): with every module's membranes in
    # one memory and tap memories of one RPE tile, 8 + 5 to 8 + 7 lanes fit, within the
    # margin; 8 + 8 does not
    options.pop("stem_lanes")
    for stem_lanes in (5, 6, 7):
        assert estimate(export, 8, board, stem_lanes=stem_lanes, **options,
                        stem_maps_ddr=True).fits
    assert not estimate(export, 8, board, stem_lanes=8, **options, stem_maps_ddr=True).fits


def test_a_stream_in_ddr_trades_its_buffer_for_two_fifos_and_the_units_logic(
        tmp_path, random_export) -> None:
    """With ``stream_ddr`` the core has no stream buffer but its unit's read FIFO (words
    padded to whole beats, enough for the latency) and write FIFO, in distributed RAM, and
    the unit's logic; nothing else changes."""
    export = load_export(random_export(tmp_path, seed=0, image_shape=[1, 16, 16], patch=4,
                                       dim=64, heads=4, depth=2, mlp_dim=256, num_classes=10,
                                       t_max=4))
    plan = CorePlan(export, lanes=16, contents=False, tile_words=256)
    held = memory_shapes(plan, stream_data_width=64)
    in_ddr = memory_shapes(plan, stream_data_width=64, stream_ddr=True)
    word = plan.geometry.bits["stream"] * 16
    assert held["stream"] == (word, plan.geometry.t_max * plan.geometry.tokens * 4)
    assert in_ddr["stream_reads"] == (-(-word // 64) * 64, StreamDdr(plan=plan).read_fifo_words)
    assert in_ddr["stream_writes"] == (word, WRITE_FIFO_WORDS)
    assert {k: v for k, v in held.items() if k != "stream"} == \
        {k: v for k, v in in_ddr.items() if not k.startswith("stream_")}
    core = sizing.core_resources(export, 16, stream_data_width=64, tile_words=256)
    ddr = sizing.core_resources(export, 16, stream_data_width=64, tile_words=256,
                                stream_ddr=True)
    assert ddr.bram36 == core.bram36 - core.memories["stream"].bram36 < core.bram36
    fifos = ddr.memories["stream_reads"].lutram_luts + ddr.memories["stream_writes"].lutram_luts
    logic = sizing.STREAM_DDR_LUTS["fixed"] + 16 * sizing.STREAM_DDR_LUTS["per_lane"]
    assert ddr.lut == core.lut - core.memories["stream"].lutram_luts + fifos + logic
    with pytest.raises(ValueError, match="stream_ddr needs stream_data_width"):
        memory_shapes(plan, stream_ddr=True)


def test_rtl_board_sizes_a_stream_in_ddr_as_built(export_dir, tmp_path, capsys) -> None:
    """`stepvit rtl --board ... --stream-ddr` weighs the design it builds: the estimate it
    prints is the sizing model's with the stream in DDR, which counts its FIFOs' LUTs and
    the unit's logic, not the stream's buffer."""
    argv = ["rtl", str(export_dir), "--board", "pynq-z2", "--lanes", "4", "--weights", "ddr",
            "--stream-weights"]
    printed = []
    for extra, build in (([], "held"), (["--stream-ddr"], "in-ddr")):
        assert cli.main(argv + extra + ["--build", str(tmp_path / build)]) == 0
        printed.append(json.loads(capsys.readouterr().out)["sizing"]["estimate"])
    board = board_parameters("pynq-z2")
    export = load_export(export_dir)
    expected = [sizing.estimate(export, 4, board, stream_data_width=64, stream_ddr=in_ddr)
                for in_ddr in (False, True)]
    assert [(p["lut"], p["bram36"]) for p in printed] == \
        [(e.lut, e.bram36) for e in expected]
    assert printed[1]["lut"] > printed[0]["lut"]


def test_distributed_ram_costs_what_yosys_built() -> None:
    # RAM64M cells (3 bits, 4 LUTs) ceil(depth / 64) deep, a read multiplexer and write
    # enables: Yosys's 208 + 78, 448 + 90, 528 + 156 and 128 + 44 (rtl/sizing.py)
    assert sizing.distributed_luts(76, 121) == 208 + 80
    assert sizing.distributed_luts(84, 256) == 448 + 92
    assert sizing.distributed_luts(32, 768) == 528 + 152
    assert sizing.distributed_luts(4, 1024) == 128 + 52
    assert sizing.distributed_luts(12, 64) == memory_lutram_luts(12, 64) == 16  # no mux
    assert sizing.distributed_luts(24, 100, granularity=12) == 2 * 4 * 4 * 2 + 24 + 4


def test_only_a_design_over_its_block_ram_moves_memories_to_luts() -> None:
    shape = sizing.MemoryShape
    memories = {"bank": shape(76, 121), "wide": shape(336, 72), "deep": shape(84, 1024),
                "rom": shape(336, 200, rom=True), "small": shape(32, 32)}
    board = {"name": "b", "resources": {"lut": 53_200, "bram36": 140},
             "budget": {"lut_fraction": 0.7, "bram_fraction": 0.8}}
    assert sizing.memory_resources(memories, ()) == (1.5 + 5 + 2.5 + 5, 0)
    assert sizing.place_distributed(memories, board) == frozenset()  # within 112 BRAM36
    # "deep" would cost 2,244 LUTs for its 2.5 BRAM36 (950 LUTs' worth at 380 a BRAM36) and
    # the ROM stays: the best trade first ("bank": 192 LUTs a BRAM36), until the budget holds
    # (boards of the PYNQ-Z2's 380 LUTs a BRAM36, smaller)
    short = {**board, "resources": {"lut": 380 * 17, "bram36": 17}}  # 13.6 BRAM36
    assert sizing.place_distributed(memories, short) == {"bank"}
    # with a margin (PLACEMENT_MARGIN) for the block RAM the model misses: a budget of 12.5
    # BRAM36, which "bank" alone would just meet, moves "wide" too
    edge = {**board, "resources": {"lut": 380 * 15.625, "bram36": 15.625}}
    assert sizing.place_distributed(memories, edge) == {"bank", "wide"}
    shorter = {**board, "resources": {"lut": 380 * 12, "bram36": 12}}  # 9.6 BRAM36
    assert sizing.place_distributed(memories, shorter) == {"bank", "wide"}
    # a memory in UltraRAM is not moved; none left that is worth it: as close as it gets
    assert sizing.place_distributed(memories, shorter, {"bank"}) == {"wide"}
    # nor one whose LUTs would take the design past the LUTs' budget (300 LUTs left here)
    assert sizing.place_distributed(memories, shorter, lut=0.7 * 380 * 12 - 300) == {"bank"}
    none = {**board, "resources": {"lut": 380, "bram36": 1}}
    assert sizing.place_distributed(memories, none) == {"bank", "wide"}
    # a memory the generator cannot mark (a FIFO's) stays in block RAM and counts, where
    # one in UltraRAM does not: with "wide" fixed, "bank" moves to meet the short board's
    # budget (14 BRAM36 against 13.1); with "wide" in UltraRAM, nothing need move
    assert sizing.place_distributed(memories, short, fixed={"wide"}) == {"bank"}
    assert sizing.place_distributed(memories, short, {"wide"}) == frozenset()
    assert sizing.memory_resources(memories, (), {"bank", "wide"}) == (2.5 + 5, 0)


#: A network whose design at 8 lanes has memories in block RAM (tokens 64, t_max 4).
BLOCK_RAM_SHAPE = dict(image_shape=[1, 32, 32], patch=4, dim=64, heads=2, depth=1, mlp_dim=64,
                       num_classes=3, t_max=4)


def test_the_estimate_counts_the_luts_of_what_it_moves(tmp_path, random_export) -> None:
    export = load_export(random_export(tmp_path, seed=0, **BLOCK_RAM_SHAPE))
    board = board_parameters("pynq-z2")
    roomy = estimate(export, 8, board)
    short = {**board, "resources": {**board["resources"], "bram36": 1}}
    moved = estimate(export, 8, short)
    assert roomy.distributed == frozenset() and moved.distributed
    memories = sizing.core_resources(export, 8).memories
    assert moved.lut - roomy.lut == sum(memories[name].distributed_luts
                                        for name in moved.distributed)
    assert moved.bram36 == roomy.bram36 - sum(memories[name].bram36
                                              for name in moved.distributed)
    assert moved.as_dict()["distributed"] == sorted(moved.distributed)
    assert moved.ram_styles == {name: "distributed" for name in moved.distributed}


def test_rtl_for_a_board_short_of_block_ram_marks_the_memories_it_moves_to_luts(
        tmp_path, random_export, capsys) -> None:
    """`stepvit rtl --board FOLDER` of a board whose block RAM the design exceeds builds the
    placement the sizing chose: each moved memory marked ram_style = "distributed" in the
    Verilog and listed in the summary."""
    board = tmp_path / "small-board"
    board.mkdir()
    text = (Path(__file__).parents[2] / "boards" / "pynq-z2" / "board.yaml").read_text()
    (board / "board.yaml").write_text(text.replace("bram36: 140", "bram36: 4"))
    export = random_export(tmp_path / "export", seed=0, **BLOCK_RAM_SHAPE)
    assert cli.main(["rtl", str(export), "--build", str(tmp_path / "b"), "--board", str(board),
                     "--lanes", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["distributed"] == sorted(summary["sizing"]["estimate"]["distributed"])
    assert "kv0" in summary["distributed"]
    verilog = (tmp_path / "b" / "stepvit_accel.v").read_text()
    assert verilog.count('(* ram_style = "distributed" *)') == len(summary["distributed"])
