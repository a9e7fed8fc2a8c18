"""The core with its residual stream in DDR (``stream_ddr``): bit-exact, and what it costs.

The stream of every step lives in a simulated DDR behind the core's ``act_*`` channels
(random bytes to start with, so a word read before it is written shows): each pass reads
its words ahead through a FIFO and writes them behind one (rtl/stream_ddr.py). These runs
hold the core to the golden model bit for bit at one and four lanes, at two budgets, with
tiles that split the residual adds into slices (a run a token), with segmented spike
words, under random backpressure; and count what the DDR carried.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_core_golden import TINY, mismatches
from test_stem_engine import stem_export

from stepvit.model.export import load_export
from stepvit.model.golden import GoldenModel
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CorePlan, Operand, Sink
from stepvit.rtl.core_sim import DdrFigures, simulate_core
from stepvit.rtl.ddr_model import DdrModel, expected_words
from stepvit.rtl.stream_ddr import StreamDdr, stream_passes


def runs_against_golden(export, images, masks, lanes, ddr=None, **options):
    """Run the images on a core with its stream in DDR; return its runs and the golden's."""
    golden = GoldenModel(export).run(images, masks=masks)
    core = StepvitCore(export, lanes=lanes, stream_ddr=True, **options)
    return simulate_core(export, images, masks, lanes=lanes, core=core, ddr=ddr), golden


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("budget", [1, None])
def test_a_stream_in_ddr_gives_the_golden_results(tmp_path, random_export, lanes,
                                                  budget) -> None:
    export = load_export(random_export(tmp_path, seed=1, **TINY))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    runs, golden = runs_against_golden(export, images, export.budget_mask(budget), lanes)
    assert mismatches(runs, golden) == []


def expected_beats(core: StepvitCore, masks: np.ndarray) -> tuple[int, int]:
    """Return the beats a run reads and writes: one word a closed chunk of a pass that
    takes the stream (writes: stores or fires into it), over the pass's active steps."""
    plan, unit = core.plan, core.stream_unit
    beats = unit.word_bytes * 8 // len(core.act_rdata)
    read = written = 0
    for index in stream_passes(plan):
        p = plan.passes[index]
        words = int(np.sum(masks[p["module"]])) * plan.geometry.tokens * p["chunks"]
        read += words * beats * (p.get("operand") == Operand.STREAM)
        written += words * beats * (p.get("sink") == Sink.STORE_STREAM or p.get("to_stream", 0))
    return read, written


def test_a_run_reads_and_writes_each_word_of_its_passes_once(tmp_path, random_export) -> None:
    export = load_export(random_export(tmp_path, seed=2, **TINY))
    images = np.random.default_rng(1).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    masks = export.budget_mask(2)
    core = StepvitCore(export, lanes=4, stream_ddr=True)
    runs = simulate_core(export, images, masks, lanes=4, core=core)
    assert mismatches(runs, GoldenModel(export).run(images, masks=masks)) == []
    assert all(run.stream_beats == expected_beats(core, masks) for run in runs)
    assert runs[0].stream_beats[0] > 0 and runs[0].stream_beats[1] > 0


def test_slices_of_split_layers_segments_and_a_slow_bus_give_the_golden_results(
        tmp_path, random_export) -> None:
    """Two heads side by side in 8 lanes, two dim segments, the residual adds split into
    slices of a chunk (a run a token); the bus takes a request, an address or a beat on half
    the cycles, 90 cycles late."""
    export = load_export(random_export(tmp_path, seed=3, image_shape=[1, 8, 8], patch=2,
                                       dim=32, heads=8, depth=1, mlp_dim=64, num_classes=3,
                                       t_max=2))
    images = np.random.default_rng(5).integers(0, 256, size=(1, 1, 8, 8), dtype=np.uint8)
    masks = export.budget_mask(None)
    slow = DdrFigures(latency=90, ready_rate=0.5, seed=7)
    core = StepvitCore(export, lanes=8, stream_ddr=True, spike_word_bits=16, tile_words=64)
    assert core.plan.split
    runs = simulate_core(export, images, masks, lanes=8, core=core, ddr=slow)
    assert mismatches(runs, GoldenModel(export).run(images, masks=masks)) == []
    assert runs[0].stream_beats == expected_beats(core, masks)
    assert runs[0].stream_stalls > 0


@pytest.mark.parametrize("index", [0, 1])
def test_a_stem_designs_tokens_wait_for_the_writes_and_give_the_golden_results(
        tmp_path, index) -> None:
    """The stem's tokens go to DDR through the blocks' write FIFO, a word a cycle, on a bus
    that takes a beat on a third of the cycles: they wait, and the results hold."""
    export, lanes = stem_export(tmp_path, index)
    images = np.random.default_rng(4).integers(
        0, 256, size=(2, *export.arch["image_shape"]), dtype=np.uint8)
    masks = export.budget_mask(None)
    core = StepvitCore(export, lanes=lanes, stem_chunk_major=True, stream_ddr=True)
    runs = simulate_core(export, images, masks, lanes=lanes, core=core,
                         ddr=DdrFigures(ready_rate=0.3, seed=index))
    assert mismatches(runs, GoldenModel(export).run(images, masks=masks)) == []
    assert runs[0].stream_stalls > 0


def test_a_stem_design_with_two_stream_buffers_cannot_keep_its_stream_in_ddr(
        tmp_path) -> None:
    export, lanes = stem_export(tmp_path, 0)
    with pytest.raises(ValueError, match="stream_ddr needs one stream buffer"):
        StepvitCore(export, lanes=lanes, stream_ddr=True)


def test_a_pass_that_leaves_words_unread_or_takes_one_not_there_is_an_error(
        tmp_path, random_export) -> None:
    """The unit alone: a pass of every chunk at step 0 reads tokens x chunks words; closed
    after half of them are taken, its error rises; so does a take from an empty FIFO."""
    export = load_export(random_export(tmp_path, seed=1, **TINY))
    plan = CorePlan(export, lanes=4)
    unit = StreamDdr(plan=plan, data_width=64, max_burst=4)
    memory = np.random.default_rng(3).integers(0, 256, unit.words * unit.word_bytes + 64,
                                               dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=5, interval=1, seed=1)
    words = plan.geometry.tokens * plan.geometry.dim_chunks
    seen = {}

    async def bench(ctx) -> None:
        ctx.set(unit.open, 1)
        ctx.set(unit.reads, 1)
        ctx.set(unit.steps, 1)
        ctx.set(unit.chunks, plan.geometry.dim_chunks)
        await ctx.tick()
        ctx.set(unit.open, 0)
        taken, cycle = [], 0
        while len(taken) < words // 2:
            ddr.cycle(ctx, unit, cycle)
            ctx.set(unit.take, ctx.get(unit.word_valid))
            if ctx.get(unit.word_valid):
                taken.append(ctx.get(unit.word_data))
            await ctx.tick()
            cycle += 1
        ctx.set(unit.take, 0)
        seen["before"] = ctx.get(unit.error)
        ctx.set(unit.close, 1)
        await ctx.tick()
        ctx.set(unit.close, 0)
        seen["unread"] = ctx.get(unit.error)
        ctx.set(unit.clear, 1)
        await ctx.tick()
        ctx.set(unit.clear, 0)
        seen["cleared"] = ctx.get(unit.error)
        seen["taken"] = taken
        while ctx.get(unit.word_valid) or not ctx.get(unit.reads_done):  # drain the pass
            ddr.cycle(ctx, unit, cycle)
            ctx.set(unit.take, ctx.get(unit.word_valid))
            await ctx.tick()
            cycle += 1
        ctx.set(unit.take, 1)  # nothing left to take
        await ctx.tick()
        seen["empty"] = ctx.get(unit.error)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["taken"] == [value & ((1 << plan.geometry.bits["stream"] * 4) - 1)
                             for value in expected_words(memory, 0, words // 2, unit.word_bytes)]
    assert (seen["before"], seen["unread"], seen["cleared"], seen["empty"]) == (0, 1, 0, 1)


def test_a_pass_that_skips_empty_words_cannot_touch_the_stream(tmp_path, random_export) -> None:
    export = load_export(random_export(tmp_path, seed=1, **TINY))
    plan = CorePlan(export, lanes=4)
    index = stream_passes(plan)[0]
    plan.passes[index] = {**plan.passes[index], "skip_empty": 1}
    with pytest.raises(ValueError, match=f"pass {index} touches the stream but does not close"):
        stream_passes(plan)
