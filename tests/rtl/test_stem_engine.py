"""The stem engine against the golden model's stem, on random stem exports (Amaranth sim)."""

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from stepvit.model.export import budget_mask_of, load_export
from stepvit.model.golden import GoldenModel
from stepvit.model.random_export import make_random_export
from stepvit.rtl.stem_engine import StemEngine
from stepvit.rtl.stem_plan import StemPlan

#: Small random stems: channels, strides, pool places, RPE on and off, odd sizes, 1 and 3
#: input channels, the kernel-2 stride-2 pool and the kernel-3 stride-2 one.
STEMS = [
    ((1, 7, 7), {"stages": [{"channels": 3, "pool": "before"}, {"channels": 4, "pool": "after"}],
                 "rpe": True}, 2),
    ((3, 5, 6), {"stages": [{"channels": 4, "kernel": 3, "stride": 2, "padding": 1}],
                 "pool": {"kernel": 2, "stride": 2, "padding": 0}, "rpe": True}, 3),
    ((1, 6, 5), {"stages": [{"channels": 2, "kernel": 1, "padding": 0, "pool": "after"},
                            {"channels": 6, "kernel": 2, "padding": 1}], "rpe": False}, 4),
    ((3, 4, 4), {"stages": [{"channels": 5, "pool": "none"}, {"channels": 4, "pool": "before"}],
                 "rpe": False}, 3),
]


def stem_export(tmp_path, index):
    image_shape, stem, lanes = STEMS[index]
    dim = stem["stages"][-1]["channels"]
    export = load_export(make_random_export(
        tmp_path / f"stem{index}", image_shape=image_shape, patch=1, dim=dim, heads=1, depth=1,
        mlp_dim=4, num_classes=3, t_max=3, seed=index, stem=stem,
        reset="soft" if index % 2 else "hard"))
    return export, lanes


def golden_stem(golden, image, mask):
    """Return X per step, the spikes per stem layer and each module's emitted maps (golden)."""
    images = torch.from_numpy(image[None].astype(np.int64))
    first_current, _ = golden.stem_current(images)
    state = golden.new_state(1)
    stream = [golden.stem_step(state, mask, first_current, step)[0].numpy()
              for step in range(golden.t_max)]
    counts = [int(state.spikes[stage.name].sum()) for stage in golden.stem]
    maps = {}
    replay = golden.new_state(1)
    last = last_stage(golden)
    for step in range(golden.t_max):
        for index, stage in enumerate(golden.stem):
            if not mask[index, step]:
                continue
            if index == 0:
                fired = golden.lif(replay, stage.name, first_current, step)
                emitted = golden.pooled(fired) if stage.pool == "after" else fired
            else:
                source = last if stage.name == "stem.rpe" else index - 1
                inputs = maps.get((source, step), torch.zeros(1, *stage.in_shape,
                                                              dtype=torch.int64))
                emitted = golden.stem_module(replay, index, inputs, step)
            maps[(index, step)] = emitted
    return stream, counts, {key: value[0].numpy() for key, value in maps.items()}


def last_stage(golden):
    return len(golden.stem) - 1 - (golden.stem[-1].name == "stem.rpe")


def simulate_engine(engine, plan, image, mask):
    """Load the pixels, start, collect X per step and the counts; return them and the cycles."""
    channels, height, width = image.shape
    tokens_shape = plan.stages[plan.last_stage].out_shape
    stream = np.zeros((plan.t_max, tokens_shape[1] * tokens_shape[2], tokens_shape[0]),
                      dtype=np.int64)
    seen = np.zeros(stream.shape[:2] + (-(-tokens_shape[0] // plan.lanes),), dtype=np.int64)
    result = {}

    async def testbench(ctx):
        for position in range(height * width):
            word = sum(int(image[c].flat[position]) << (8 * c) for c in range(channels))
            ctx.set(engine.pixel_valid, 1)
            ctx.set(engine.pixel_address, position)
            ctx.set(engine.pixel_data, word)
            await ctx.tick()
        ctx.set(engine.pixel_valid, 0)
        ctx.set(engine.mask, sum(int(bit) << i for i, bit in enumerate(mask.flatten())))
        ctx.set(engine.start, 1)
        await ctx.tick()
        ctx.set(engine.start, 0)
        cycles = 0
        while ctx.get(engine.busy) or ctx.get(engine.token_valid):
            if ctx.get(engine.token_valid):
                step, token, chunk = (ctx.get(engine.token_step), ctx.get(engine.token_index),
                                      ctx.get(engine.token_chunk))
                seen[step, token, chunk] += 1
                for lane in range(plan.lanes):
                    channel = chunk * plan.lanes + lane
                    if channel < tokens_shape[0]:
                        stream[step, token, channel] = ctx.get(engine.token_data[lane])
            cycles += int(ctx.get(engine.busy))
            await ctx.tick()
        result["cycles"] = cycles
        result["counts"] = [ctx.get(engine.counts[i]) for i in range(len(plan.stages))]

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert (seen == 1).all(), "every token chunk of every step is emitted once"
    return stream, result["counts"], result["cycles"]


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_stem_engine_matches_golden_at_budgets_one_and_full(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    golden = GoldenModel(export)
    plan = StemPlan.from_export(export, lanes=lanes)
    engine = StemEngine(plan, arrays=export.arrays, thresholds=export.thresholds,
                        bits=export.bit_widths, leak_shift=int(export.neuron["leak_shift"]),
                        reset=export.neuron["reset"])
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, size=export.arch["image_shape"], dtype=np.uint8)
    image[rng.random(image.shape) < 0.4] = 0
    rows = len(plan.stages)
    for budget in (1, None):
        mask = budget_mask_of(export.timestep_mask, budget)[:rows]
        expected, counts, maps = golden_stem(golden, image, budget_mask_of(
            export.timestep_mask, budget))
        got, got_counts, cycles = simulate_engine(engine, plan, image, mask)
        assert np.array_equal(got, np.stack(expected)), (index, budget)
        assert got_counts == counts, (index, budget)
        assert cycles == plan.image_cycles(mask, image, maps), (index, budget)
