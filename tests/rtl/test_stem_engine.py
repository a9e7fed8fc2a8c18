"""The stem engine against the golden model's stem, on random stem exports (Amaranth sim)."""

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from stepvit.model.export import budget_mask_of, load_export
from stepvit.model.export.stem import complete_stem, stem_stages
from stepvit.model.golden import GoldenModel
from stepvit.model.random_export import make_random_export
from stepvit.rtl.stem_engine import StemEngine
from stepvit.rtl.stem_plan import StemPlan
from stepvit.sim.stem_cycles import stem_maps

#: Small random stems: channels, strides, pool places, RPE on and off, odd sizes, 1 and 3
#: input channels, the kernel-2 stride-2 pool and the kernel-3 stride-2 one.
STEMS = [
    ((1, 7, 7), {"stages": [{"channels": 3, "pool": "before"}, {"channels": 4, "pool": "after"}],
                 "rpe": True}, 2),
    ((3, 7, 8), {"stages": [{"channels": 4, "kernel": 3, "stride": 2, "padding": 1,
                             "pool": "after"}],
                 "pool": {"kernel": 2, "stride": 2, "padding": 0}, "rpe": True}, 3),
    ((1, 6, 5), {"stages": [{"channels": 2, "kernel": 1, "padding": 0, "pool": "after"},
                            {"channels": 6, "kernel": 2, "padding": 1}], "rpe": False}, 4),
    ((3, 4, 4), {"stages": [{"channels": 5, "pool": "none"}, {"channels": 4, "pool": "before"}],
                 "rpe": False}, 3),
]


def stem_export(tmp_path, index, shape=None):
    image_shape, stem, lanes = shape or STEMS[index]
    dim = stem["stages"][-1]["channels"]
    export = load_export(make_random_export(
        tmp_path / f"stem{index}", image_shape=image_shape, patch=1, dim=dim, heads=1, depth=1,
        mlp_dim=4, num_classes=3, t_max=3, seed=index, stem=stem,
        reset="soft" if index % 2 else "hard"))
    return export, lanes


def drawn_stem(seed):
    """Draw a stem that leaves a pixel: 1 or 3 input channels, odd or even sizes, 1-3 stages
    of random channels, kernels, strides, paddings and pool places, a random pool, the RPE
    on or off, and a lane count that may leave a ragged chunk."""
    rng = np.random.default_rng(1000 + seed)
    while True:
        image_shape = (int(rng.choice([1, 3])), int(rng.integers(5, 10)), int(rng.integers(5, 10)))
        stages = []
        for _ in range(int(rng.integers(1, 4))):
            kernel = int(rng.integers(1, 4))
            stages.append({"channels": int(rng.integers(1, 6)), "kernel": kernel,
                           "stride": int(rng.integers(1, 3)),
                           "padding": int(rng.integers(0, kernel)),
                           "pool": str(rng.choice(["none", "before", "after"]))})
        pool = [(3, 2, 1), (2, 2, 0), (3, 1, 1)][int(rng.integers(0, 3))]
        stem = complete_stem({"stages": stages, "rpe": bool(rng.integers(0, 2)),
                              "pool": dict(zip(("kernel", "stride", "padding"), pool))})
        try:
            stem_stages(image_shape, stem)
        except ValueError:
            continue
        return image_shape, stem, int(rng.integers(1, stages[-1]["channels"] + 1))


def golden_stem(golden, image, mask):
    """Return X per step and the spikes per stem layer (the golden model's ``stem_step``)."""
    images = torch.from_numpy(image[None].astype(np.int64))
    first_current, _ = golden.stem_current(images)
    state = golden.new_state(1)
    stream = [golden.stem_step(state, mask, first_current, step)[0].numpy()
              for step in range(golden.t_max)]
    return np.stack(stream), [int(state.spikes[stage.name].sum()) for stage in golden.stem]


def simulate_engine(engine, plan, runs):
    """Run ``(image, mask)`` pairs one after the other in one simulation (the membranes and
    banks of an image left behind for the next); return each one's X, counts and cycles."""
    tokens_shape = plan.stages[plan.last_stage].out_shape
    shape = (plan.t_max, tokens_shape[1] * tokens_shape[2], tokens_shape[0])
    chunks = -(-tokens_shape[0] // plan.lanes)
    results = []

    async def load(ctx, image, bank):
        channels, height, width = image.shape
        ctx.set(engine.pixel_bank, bank)
        for position in range(height * width):
            word = sum(int(image[c].flat[position]) << (8 * c) for c in range(channels))
            ctx.set(engine.pixel_valid, (1 << channels) - 1)
            ctx.set(engine.pixel_address, position)
            ctx.set(engine.pixel_data, word)
            await ctx.tick()
        ctx.set(engine.pixel_valid, 0)

    async def testbench(ctx):
        for index, (image, mask) in enumerate(runs):
            await load(ctx, image, index % 2)
            ctx.set(engine.bank, index % 2)
            stream = np.zeros(shape, dtype=np.int64)
            seen = np.zeros(shape[:2] + (chunks,), dtype=np.int64)
            ctx.set(engine.mask, sum(int(bit) << i for i, bit in enumerate(mask.flatten())))
            ctx.set(engine.start, 1)
            await ctx.tick()
            ctx.set(engine.start, 0)
            cycles = 0
            while ctx.get(engine.busy) or ctx.get(engine.token_valid):
                if ctx.get(engine.token_valid):
                    step, token, chunk = (ctx.get(engine.token_step),
                                          ctx.get(engine.token_index),
                                          ctx.get(engine.token_chunk))
                    seen[step, token, chunk] += 1
                    for lane in range(plan.lanes):
                        if chunk * plan.lanes + lane < shape[2]:
                            stream[step, token, chunk * plan.lanes + lane] = ctx.get(
                                engine.token_data[lane])
                cycles += int(ctx.get(engine.busy))
                await ctx.tick()
            assert (seen == 1).all(), "every token chunk of every step is emitted once"
            counts = [ctx.get(engine.counts[i]) for i in range(len(plan.stages))]
            results.append((stream, counts, cycles))

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return results


def check_engine_against_golden(export, lanes, seed, masks=None):
    """Two images (budget 1, then the full mask; or ``masks``) through one simulation: X,
    counts, cycles."""
    golden = GoldenModel(export)
    plan = StemPlan.from_export(export, lanes=lanes)
    engine = StemEngine(plan, arrays=export.arrays, thresholds=export.thresholds,
                        bits=export.bit_widths, leak_shift=int(export.neuron["leak_shift"]),
                        reset=export.neuron["reset"])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(2, *export.arch["image_shape"]), dtype=np.uint8)
    images[rng.random(images.shape) < 0.4] = 0
    rows = len(plan.stages)
    if masks is None:
        masks = [budget_mask_of(export.timestep_mask, budget) for budget in (1, None)]
    runs = [(image, mask[:rows]) for image, mask in zip(images, masks)]
    results = simulate_engine(engine, plan, runs)
    for image, mask, (got, got_counts, cycles) in zip(images, masks, results):
        expected, counts = golden_stem(golden, image, mask)
        assert np.array_equal(got, expected), seed
        assert got_counts == counts, seed
        maps, _ = stem_maps(golden, image[None], mask)
        assert cycles == plan.image_cycles(mask[:rows], image, maps[0]), seed


@pytest.mark.parametrize("index", range(len(STEMS)))
def test_stem_engine_matches_golden_at_budgets_one_and_full(tmp_path, index):
    export, lanes = stem_export(tmp_path, index)
    check_engine_against_golden(export, lanes, index)


@pytest.mark.parametrize("seed", range(6))
def test_stem_engine_matches_golden_on_drawn_stems(tmp_path, seed):
    export, lanes = stem_export(tmp_path, seed, drawn_stem(seed))
    check_engine_against_golden(export, lanes, seed)



def late_stage_0_mask(export, rows, first):
    """The export's mask with every stem module on, but stage 0 only from step ``first``."""
    mask = np.array(export.timestep_mask, dtype=np.int64)
    mask[:rows] = 1
    mask[0, :first] = 0
    return mask


def test_stage_0_is_cleared_and_scattered_once_at_its_first_active_step(tmp_path):
    # a scatter a bit plane, most significant first, the banks doubled between two
    export, lanes = stem_export(tmp_path, 0)
    plan = StemPlan.from_export(export, lanes=lanes)
    rows = len(plan.stages)
    horner = [("clear", None)]
    for plane in range(7, -1, -1):
        horner += [("scatter", plane)] + [("double", None)] * (plane > 0)
    for first in range(plan.t_max + 1):
        mask = late_stage_0_mask(export, rows, first)[:rows]
        runs = [(p.kind, p.step, p.plane if p.kind == "scatter" else None)
                for p in plan.passes()
                if p.module == 0 and p.kind in ("clear", "scatter", "double") and p.enabled(mask)]
        expected = ([(kind, first, plane) for kind, plane in horner]
                    if first < plan.t_max else [])
        assert runs == expected, first


def test_stem_engine_keeps_stage_0s_current_while_the_others_use_the_banks(tmp_path):
    # the other modules clear, scatter and fire in the shared banks before stage 0's first
    # step and between its steps: its later fires must read the current it kept
    export, lanes = stem_export(tmp_path, 0)
    rows = len(StemPlan.from_export(export, lanes=lanes).stages)
    assert export.t_max >= 3
    check_engine_against_golden(export, lanes, 7, masks=[late_stage_0_mask(export, rows, 1),
                                                         late_stage_0_mask(export, rows, 0)])
