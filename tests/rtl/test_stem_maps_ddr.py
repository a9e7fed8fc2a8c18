"""The stem's spike maps in DDR (``maps_ddr``, rtl/stem_map_ddr.py): bit-exact, to the cycle.

The engine alone runs behind a simulated DDR (random bytes to start with, so a word read
before it is written shows): its tokens and spike counts are the golden model's, and its
cycles are the exact cycle model's plus exactly the cycles it says it waited for its maps.
A write that goes astray, or a read that does not wait for the writes before it, shows.
The whole core with its stream and the stem's maps in DDR is held to the golden model on a
slow bus.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_core_golden import mismatches
from test_stem_engine import STEMS, drawn_stem, golden_stem, stem_export

from stepvit.model.golden import GoldenModel
from stepvit.rtl.axi_reader import read_channels
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_sim import DdrFigures, simulate_core
from stepvit.rtl.ddr_model import DdrModel
from stepvit.rtl.stem_engine import StemEngine
from stepvit.rtl.stem_map_ddr import StemMapDdr, map_layout
from stepvit.rtl.stem_plan import StemPlan
from stepvit.sim.stem_cycles import stem_maps

#: Cycles from a write's beat to its answer, and from a read's request to its first beat.
LATENCY = 20


def maps_engine(export, lanes):
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    engine = StemEngine(plan, arrays=export.arrays, thresholds=export.thresholds,
                        bits=export.bit_widths, leak_shift=int(export.neuron["leak_shift"]),
                        reset=export.neuron["reset"], maps_ddr=True)
    return plan, engine


class MapMemory:
    """The DDR behind an engine's maps unit: reads by :class:`DdrModel`, writes landed (only
    their strobed bytes) ``LATENCY`` cycles after they are taken, ``answered`` when none is
    left. ``flip``: the byte offset of one written chunk whose first write lands with its
    bits inverted (a write gone wrong)."""

    def __init__(self, unit, seed, ready_rate=1.0, flip=None):
        self.unit = unit
        size = unit.layout.total_bytes + 4096
        rng = np.random.default_rng(seed)
        self.memory = rng.integers(0, 256, size, dtype=np.uint8)
        self.reads = DdrModel(self.memory, unit.layout.beat_bytes, latency=LATENCY,
                              interval=1, seed=seed, arready_rate=ready_rate, rvalid_gap=0.0)
        self.port = type("Port", (), {name: getattr(unit, name)
                                      for name in read_channels(32, 8 * unit.layout.beat_bytes)})
        self.rng, self.ready_rate, self.flip = rng, ready_rate, flip
        self.pending = []

    async def serve(self, ctx):
        beat = self.unit.layout.beat_bytes
        cycle = 0
        while True:
            self.reads.cycle(ctx, self.port, cycle)
            while self.pending and self.pending[0][0] <= cycle:
                _, address, data, strobe = self.pending.pop(0)
                for byte in range(beat):
                    if strobe >> byte & 1:
                        self.memory[address + byte] = data >> (8 * byte) & 0xFF
            ready = int(self.rng.random() < self.ready_rate)
            ctx.set(self.unit.map_ready, ready)
            ctx.set(self.unit.answered, int(not self.pending))
            if ready and ctx.get(self.unit.map_valid):
                address, data = ctx.get(self.unit.map_address), ctx.get(self.unit.map_data)
                strobe = ctx.get(self.unit.map_strobe)
                if self.flip is not None and address <= self.flip < address + beat \
                        and strobe >> (self.flip - address) & 1:
                    data ^= 0xFF << (8 * (self.flip - address))
                    self.flip = None
                self.pending.append((cycle + LATENCY, address, data, strobe))
            await ctx.tick()
            cycle += 1


def run_maps_engine(export, lanes, seed, ready_rate=1.0, flip=None, budgets=(1, None)):
    """Run two images (budget 1, then the full mask) through a maps-in-DDR engine; return,
    per image, the golden model's and the engine's X and counts, its busy cycles, the
    cycles it waited for its maps and the exact model's cycles."""
    golden = GoldenModel(export)
    plan, engine = maps_engine(export, lanes)
    memory = MapMemory(engine.map_unit, seed, ready_rate, flip)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(budgets), *export.arch["image_shape"]),
                          dtype=np.uint8)
    images[rng.random(images.shape) < 0.4] = 0
    rows = len(plan.stages)
    masks = [export.budget_mask(budget) for budget in budgets]
    tokens_shape = plan.stages[plan.last_stage].out_shape
    shape = (plan.t_max, tokens_shape[1] * tokens_shape[2], tokens_shape[0])
    results = []

    async def testbench(ctx):
        ctx.set(engine.map_unit.base, 0)
        ctx.set(engine.map_unit.clear, 0)
        for index, (image, mask) in enumerate(zip(images, masks)):
            channels, height, width = image.shape
            ctx.set(engine.pixel_bank, index % 2)
            for position in range(height * width):
                ctx.set(engine.pixel_valid, (1 << channels) - 1)
                ctx.set(engine.pixel_address, position)
                ctx.set(engine.pixel_data, sum(int(image[c].flat[position]) << (8 * c)
                                               for c in range(channels)))
                await ctx.tick()
            ctx.set(engine.pixel_valid, 0)
            ctx.set(engine.bank, index % 2)
            ctx.set(engine.mask, sum(int(bit) << i
                                     for i, bit in enumerate(mask[:rows].flatten())))
            ctx.set(engine.start, 1)
            await ctx.tick()
            ctx.set(engine.start, 0)
            stream = np.zeros(shape, dtype=np.int64)
            cycles = waited = 0
            while ctx.get(engine.busy) or ctx.get(engine.token_valid):
                if ctx.get(engine.token_valid):
                    step, token, chunk = (ctx.get(engine.token_step),
                                          ctx.get(engine.token_index),
                                          ctx.get(engine.token_chunk))
                    for lane in range(plan.lanes):
                        if chunk * plan.lanes + lane < shape[2]:
                            stream[step, token, chunk * plan.lanes + lane] = ctx.get(
                                engine.token_data[lane])
                cycles += int(ctx.get(engine.busy))
                waited += int(ctx.get(engine.busy) and ctx.get(engine.map_waiting))
                await ctx.tick()
            assert not ctx.get(engine.map_unit.error)
            counts = [ctx.get(engine.counts[i]) for i in range(rows)]
            expected, expected_counts = golden_stem(golden, image, mask)
            maps, _ = stem_maps(golden, image[None], mask)
            results.append({"expected": expected, "got": stream,
                            "expected_counts": expected_counts, "counts": counts,
                            "cycles": cycles, "waited": waited,
                            "model": plan.image_cycles(mask[:rows], image, maps[0])})

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(memory.serve, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return results


def assert_exact(results):
    for result in results:
        assert np.array_equal(result["got"], result["expected"])
        assert result["counts"] == result["expected_counts"]
        assert result["cycles"] == result["model"] + result["waited"]


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_maps_in_ddr_give_the_golden_tokens_in_the_models_cycles_plus_the_waits(tmp_path,
                                                                               index):
    export, lanes = stem_export(tmp_path, index)
    results = run_maps_engine(export, lanes, seed=index, ready_rate=0.5)
    assert_exact(results)
    assert all(result["waited"] > 0 for result in results)


@pytest.mark.parametrize("seed", range(3))
def test_maps_in_ddr_give_the_golden_tokens_on_drawn_stems(tmp_path, seed):
    export, lanes = stem_export(tmp_path, seed, drawn_stem(seed))
    assert_exact(run_maps_engine(export, lanes, seed=seed))


def test_a_map_write_gone_wrong_shows_in_the_tokens(tmp_path):
    """The golden comparison can fail: one written chunk lands inverted."""
    export, lanes = stem_export(tmp_path, 0)
    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=True)
    layout = map_layout(plan, 64)
    # stage 0's map, step 0, position 4 (the image's centre), chunk 0
    flip = layout.address(0, 0, 4, 0)
    results = run_maps_engine(export, lanes, seed=0, flip=flip, budgets=(None,))
    assert not np.array_equal(results[0]["got"], results[0]["expected"])


def test_the_maps_layout_is_position_major_a_chunk_in_bytes_of_its_own():
    class Stage:
        def __init__(self, channels, size):
            self.out_shape = (channels, size, size)

    class Plan:
        chunk_major, t_max = True, 4

        def __init__(self, lanes, stages):
            self.lanes, self.stages = lanes, stages

        def chunks(self, index):
            return -(-self.stages[index].out_shape[0] // self.lanes)

    # Spikformer-4-384's stem at 4 lanes: 48, 96, 192, 384 and 384 channels
    stages = [Stage(48, 32), Stage(96, 32), Stage(192, 16), Stage(384, 8), Stage(384, 8)]
    layout = map_layout(Plan(4, stages), 64)
    assert layout.chunk_bytes == 1
    assert layout.word_beats == (2, 3, 6, 12, 12)  # 12, 24, 48, 96, 96 bytes
    assert layout.bases[1] == 4 * 1024 * 16
    assert layout.total_bytes == sum(4 * p * b * 8 for p, b in
                                     zip(layout.positions, layout.word_beats))
    assert layout.address(1, 2, 5, 3) == layout.bases[1] + (2 * 1024 + 5) * 24 + 3
    assert map_layout(Plan(12, stages), 64).chunk_bytes == 2
    with pytest.raises(ValueError, match="wider than a 64-bit beat"):
        map_layout(Plan(72, stages), 64)
    Plan.chunk_major = False
    with pytest.raises(ValueError, match="chunk-major"):
        map_layout(Plan(4, stages), 64)


def test_a_stem_maps_unit_refuses_a_step_major_stem(tmp_path):
    export, lanes = stem_export(tmp_path, 0)
    with pytest.raises(ValueError, match="chunk-major"):
        StemMapDdr(StemPlan.from_export(export, lanes=lanes))
    with pytest.raises(ValueError, match="stem_maps_ddr needs a chunk-major stem"):
        StepvitCore(export, lanes=lanes, stem_maps_ddr=True)


@pytest.mark.parametrize("index", [0, 1])
def test_a_core_with_its_stream_and_stem_maps_in_ddr_gives_the_golden_results(tmp_path,
                                                                               index):
    """The maps' writes share the stream's write FIFO, their reads the stream's read port, on
    a bus that takes a beat a third of the cycles."""
    export, lanes = stem_export(tmp_path, index)
    images = np.random.default_rng(4).integers(
        0, 256, size=(2, *export.arch["image_shape"]), dtype=np.uint8)
    masks = export.budget_mask(None)
    core = StepvitCore(export, lanes=lanes, stem_chunk_major=True, stream_ddr=True,
                       stem_maps_ddr=True)
    runs = simulate_core(export, images, masks, lanes=lanes, core=core,
                         ddr=DdrFigures(ready_rate=0.3, seed=index))
    assert mismatches(runs, GoldenModel(export).run(images, masks=masks)) == []
    assert core.activation_bytes == core.maps_offset + map_layout(
        StemPlan.from_export(export, lanes=lanes, chunk_major=True), 64).total_bytes
