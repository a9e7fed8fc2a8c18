"""The stem's sizing lists exactly the memories the stem engine elaborates, its dense events
are the plan's, its logic is one datapath's."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment, Shape
from test_stem_engine import STEMS, stem_export

from stepvit.rtl.sizing import memory_bram36
from stepvit.rtl.stem_engine import StemEngine
from stepvit.rtl.stem_plan import START_CYCLES, StemPlan
from stepvit.rtl.stem_sizing import (
    rewrites_out_map,
    stem_bram36,
    stem_dense_events,
    stem_logic_luts,
    stem_memories,
)


def elaborated_memories(fragment):
    """Yield ``(width, depth)`` of every memory under ``fragment``."""
    for sub, _, _ in fragment.subfragments:
        yield from elaborated_memories(sub)
    if type(fragment).__name__ == "MemoryInstance":
        yield Shape.cast(fragment._data.shape).width, fragment._data.depth


def write_enables(fragment, name):
    """Return the write-enable width of the memory ``name`` under ``fragment``."""
    for sub, sub_name, _ in fragment.subfragments:
        if sub_name == name and type(sub).__name__ == "MemoryInstance":
            return len(sub._write_ports[0]._en)
        found = write_enables(sub, name)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_stem_memories_are_the_engines(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    plan = StemPlan.from_export(export, lanes=lanes)
    engine = StemEngine(plan, arrays=export.arrays, thresholds=export.thresholds,
                        bits=export.bit_widths, leak_shift=1, reset="hard")
    got = sorted(elaborated_memories(Fragment.get(engine, None)))
    memories = stem_memories(plan, export.bit_widths)
    assert got == sorted((m.width, max(m.depth, 2)) for m in memories.values())
    assert stem_bram36(plan, export.bit_widths) == sum(
        memory_bram36(m.width, m.depth, rom=m.rom, granularity=m.granularity)
        for m in memories.values())


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_stem_dense_events_are_the_plans_loops_with_every_bit_on(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    plan = StemPlan.from_export(export, lanes=lanes)
    mask = np.ones((len(plan.stages), plan.t_max), dtype=np.int64)
    # each loop's cycles without its start, the empty scatter's read and a fire's drain
    extra = {"clear": START_CYCLES, "double": START_CYCLES, "scatter": START_CYCLES + 1,
             "fire": START_CYCLES + 3}
    loops = 0
    for stem_pass in plan.passes():
        if stem_pass.kind not in extra or not stem_pass.enabled(mask):
            continue
        channels, height, width = plan.stages[stem_pass.module].in_shape
        bits = np.full(height * width, channels)  # a spike, or the pass's plane, a channel
        loops += plan.pass_cycles(stem_pass, bits) - extra[stem_pass.kind]
    assert stem_dense_events(plan) == loops


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_stem_logic_is_paid_once_whatever_the_modules(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    plan = StemPlan.from_export(export, lanes=lanes)
    logic = stem_logic_luts(plan, export.bit_widths)
    # twice the modules share the same banks; twice the lanes double them
    doubled = dataclasses.replace(plan, stages=plan.stages + plan.stages)
    assert stem_logic_luts(doubled, export.bit_widths) == logic
    wider = dataclasses.replace(plan, lanes=2 * lanes)
    assert abs(stem_logic_luts(wider, export.bit_widths) - 2 * logic) <= 1
    assert logic > 0


def test_spikformers_emitted_maps_are_rewritten_where_the_block_ram_is_worth_it(tmp_path):
    """Spikformer-4-384's chunk-major stem: at 4 lanes a chunk of an emitted map is half a
    9-bit byte, and four of its five maps are written whole words (the first is as deep as
    it is wide either way); at 8 lanes a chunk is a byte, and only stage 1's map saves a
    whole BRAM36 (the others half of one, worth less than 192-384 bits of select). Each
    unit's memory is written as the sizing model counts it: one write enable, or a chunk's."""
    from stepvit.host import cli
    from stepvit.model.export import load_export
    from stepvit.rtl.stem_conv import shared_sum_bits
    from stepvit.rtl.stem_unit import StemModuleUnit

    config = Path(__file__).parents[2] / "model" / "configs" / "spikformer-4-384.yaml"
    assert cli.main(["random-export", "--config", str(config), "--out", str(tmp_path),
                     "--vectors", "0"]) == 0
    export = load_export(tmp_path)
    bits = export.bit_widths
    for lanes, expected in ((4, [False, True, True, True, True]),
                            (8, [False, True, False, False, False])):
        plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
        assert [rewrites_out_map(plan, i) for i in range(len(plan.stages))] == expected
        shapes = stem_memories(plan, bits, streamed=True)
        for index, stage in enumerate(plan.stages):
            unit = StemModuleUnit(plan, index, bias=None, threshold=None,
                                  current_bits=bits["embed_current"],
                                  membrane_bits=bits["membrane"], sum_bits=shared_sum_bits(bits))
            enables = write_enables(Fragment.get(unit, None), "out_map")
            model = shapes[f"{stage.name.replace('.', '')}_out_map"]
            assert enables == (1 if model.granularity is None else plan.chunks(index))
