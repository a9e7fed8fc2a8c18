"""The stem's banked scatter conv against a direct numpy conv, in Amaranth's simulator."""

import gc

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.model.export.stem import conv_out
from stepvit.rtl.stem_banks import bank_modulus, scatter_tables, window_tables
from stepvit.rtl.stem_conv import StemConv, StemConvBanks


def reference_currents(weight, in_size, stride, padding, events):
    """The conv of the events as written in SPEC.md section 5 (zero padding, one sum per output)."""
    cout, cin, kernel, _ = weight.shape
    image = np.zeros((cin, *in_size), dtype=np.int64)
    for y, x, channel, plane in events:
        image[channel, y, x] += 1 << plane
    out_h, out_w = (conv_out(size, kernel, stride, padding) for size in in_size)
    padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    currents = np.zeros((cout, out_h, out_w), dtype=np.int64)
    for oy in range(out_h):
        for ox in range(out_w):
            window = padded[:, oy * stride:oy * stride + kernel, ox * stride:ox * stride + kernel]
            currents[:, oy, ox] = np.tensordot(weight, window, axes=([1, 2, 3], [0, 1, 2]))
    return currents


def reference_pool(currents, pool):
    """Max over each window's positions inside the map (the padding never a candidate)."""
    kernel, stride, padding = pool
    cout, height, width = currents.shape
    pooled = np.zeros((cout, conv_out(height, *pool), conv_out(width, *pool)), dtype=np.int64)
    for py in range(pooled.shape[1]):
        for px in range(pooled.shape[2]):
            y0, x0 = py * stride - padding, px * stride - padding
            window = currents[:, max(y0, 0):y0 + kernel, max(x0, 0):x0 + kernel]
            pooled[:, py, px] = window.reshape(cout, -1).max(axis=1)
    return pooled


def simulate(dut, events, chunks, pooled_size, *, clear_after=False):
    """Feed the events back to back, read every window; return [Cout-padded, py, px]."""
    return simulate_modules(dut, [(0, events, chunks, pooled_size)], clear_after=clear_after)[0]


def simulate_modules(dut, cases, *, clear_after=False):
    """Run ``(module, events, chunks, pooled_size)`` cases one after the other on the banks.

    Each case clears the banks first (after its events instead with ``clear_after``), as a
    module's clear pass does, and scatters its events ``(y, x, channel, plane)`` a plane at
    a time as stage 0's passes do; returns each case's windows [Cout-padded, py, px].
    """
    lanes = len(dut.window_max)
    results = [np.zeros((chunks * lanes, *size), dtype=np.int64) for _, _, chunks, size in cases]

    async def sweep(ctx, valid):
        # every address of every bank, a cycle each: a clear, or a double (clear_address)
        ctx.set(valid, 1)
        for address in range(dut.depth):
            ctx.set(dut.clear_address, address)
            await ctx.tick()
        ctx.set(valid, 0)

    async def clear(ctx):
        await sweep(ctx, dut.clear_valid)

    async def double(ctx):
        await sweep(ctx, dut.double_valid)

    async def testbench(ctx):
        for (module, events, chunks, pooled_size), result in zip(cases, results):
            ctx.set(dut.module, module)
            if not clear_after:
                await clear(ctx)
            # the planes most significant first, the banks doubled between two (Horner's
            # rule), an event right after a double's last read (the reads are transparent)
            for plane in reversed(range(max(event[3] for event in events) + 1)):
                for y, x, channel, _ in (e for e in events if e[3] == plane):
                    for chunk in range(chunks):
                        ctx.set(dut.event_valid, 1)
                        ctx.set(dut.event_y, y)
                        ctx.set(dut.event_x, x)
                        ctx.set(dut.event_channel, channel)
                        ctx.set(dut.event_chunk, chunk)
                        await ctx.tick()
                ctx.set(dut.event_valid, 0)
                if plane:
                    await double(ctx)
            if clear_after:
                await ctx.tick()
                await clear(ctx)
            await read_windows(ctx, dut, chunks, pooled_size, result)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return results


async def read_windows(ctx, dut, chunks, pooled_size, result):
    """Read every pool window of every chunk into ``result``, one read at a time."""
    lanes = len(dut.window_max)
    for py in range(pooled_size[0]):
        for px in range(pooled_size[1]):
            for chunk in range(chunks):
                ctx.set(dut.window_valid, 1)
                ctx.set(dut.window_y, py)
                ctx.set(dut.window_x, px)
                ctx.set(dut.window_chunk, chunk)
                await ctx.tick()
                ctx.set(dut.window_valid, 0)
                await ctx.tick().repeat(2)
                await ctx.delay(1e-8)
                assert ctx.get(dut.window_done) == 1
                for lane in range(lanes):
                    result[chunk * lanes + lane, py, px] = ctx.get(dut.window_max[lane])


def random_case(seed):
    """A small random conv: channels, kernel, stride, padding, odd sizes, pool, lanes, planes."""
    rng = np.random.default_rng(seed)
    kernel = int(rng.integers(1, 4))
    stride = int(rng.integers(1, 3))
    padding = int(rng.integers(0, kernel))
    in_size = (int(rng.integers(kernel, 8)), int(rng.integers(kernel, 8)))
    cin, cout = int(rng.choice([1, 3, 2])), int(rng.integers(1, 6))
    weight = rng.integers(-128, 128, size=(cout, cin, kernel, kernel))
    pool = [(1, 1, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)][int(rng.integers(0, 4))]
    lanes = int(rng.integers(1, cout + 1))
    planes = 8 if seed % 2 else 1
    count = int(rng.integers(1, 3 * cin * in_size[0] * in_size[1] // 2 + 2))
    events = [(int(rng.integers(0, in_size[0])), int(rng.integers(0, in_size[1])),
               int(rng.integers(0, cin)), int(rng.integers(0, planes))) for _ in range(count)]
    # a run of events at one position (channels back to back): the transparent reads
    y, x = events[0][:2]
    events[1:1] = [(y, x, channel, 0) for channel in range(cin)]
    return weight, in_size, stride, padding, pool, lanes, events


def fitted_pool(weight, in_size, stride, padding, pool):
    """Return ``pool``, or no pool where its window would leave no output."""
    conv_size = tuple(conv_out(size, weight.shape[2], stride, padding) for size in in_size)
    return pool if min(conv_out(size, *pool) for size in conv_size) >= 1 else (1, 1, 0)


def pooled_of(conv):
    """Return the pooled ``(H, W)`` a window read of ``conv`` walks."""
    return tuple(conv_out(conv_out(size, conv.weight.shape[2], conv.stride, conv.padding),
                          *conv.pool) for size in conv.in_size)


@pytest.mark.parametrize("seed", range(6))
def test_scatter_and_window_read_match_the_conv_and_its_pool(seed):
    weight, in_size, stride, padding, pool, lanes, events = random_case(seed)
    conv = StemConv(weight, in_size, stride, padding,
                    fitted_pool(weight, in_size, stride, padding, pool))
    dut = StemConvBanks([conv], lanes=lanes, sum_bits=20)
    chunks = -(-weight.shape[0] // lanes)
    got = simulate(dut, events, chunks, pooled_of(conv))
    expected = reference_pool(reference_currents(weight, in_size, stride, padding, events),
                              conv.pool)
    assert np.array_equal(got[:weight.shape[0]], expected), (seed, conv.pool, stride, padding)


def test_modules_share_the_banks_each_with_its_own_tables_and_taps():
    cases = [random_case(seed) for seed in (1, 2, 4)]
    convs = [StemConv(weight, in_size, stride, padding,
                      fitted_pool(weight, in_size, stride, padding, pool))
             for weight, in_size, stride, padding, pool, _, _ in cases]
    dut = StemConvBanks(convs, lanes=2, sum_bits=20)
    chunks = [-(-conv.weight.shape[0] // 2) for conv in convs]
    # each module in turn, then the first again: nothing of the others' passes is left
    order = [0, 1, 2, 0]
    got = simulate_modules(dut, [(module, cases[module][6], chunks[module],
                                  pooled_of(convs[module])) for module in order])
    assert len({(c.weight.shape, c.in_size, c.stride) for c in convs}) == len(convs)
    for module, result in zip(order, got):
        weight, in_size, stride, padding, _, _, events = cases[module]
        expected = reference_pool(reference_currents(weight, in_size, stride, padding, events),
                                  convs[module].pool)
        assert np.array_equal(result[:weight.shape[0]], expected), module


def test_stride_one_kernel_three_reaches_nine_banks_in_one_event():
    weight = np.arange(9).reshape(1, 1, 3, 3) - 4
    dut = StemConvBanks([StemConv(weight, (5, 5), 1, 1, (1, 1, 0))], lanes=1, sum_bits=12)
    got = simulate(dut, [(2, 2, 0, 0)], 1, (5, 5))
    expected = reference_currents(weight, (5, 5), 1, 1, [(2, 2, 0, 0)])
    assert dut.modulus == 3
    assert np.count_nonzero(got) == 8  # the centre tap is weight 0
    assert np.array_equal(got, expected)


def test_clear_zeroes_every_bank():
    weight = np.ones((2, 1, 3, 3), dtype=np.int64)
    dut = StemConvBanks([StemConv(weight, (4, 4), 1, 1, (1, 1, 0))], lanes=2, sum_bits=12)
    events = [(y, x, 0, 3) for y in range(4) for x in range(4)]
    got = simulate(dut, events, 1, (4, 4), clear_after=True)
    assert not got.any()


def test_tables_put_a_spikes_reach_in_distinct_banks():
    for kernel, stride in ((3, 1), (3, 2), (5, 2), (2, 1), (1, 1)):
        modulus = bank_modulus(kernel, stride)
        tables = scatter_tables(11, kernel, stride, kernel // 2, modulus)
        reach = np.zeros(11, dtype=np.int64)
        out = conv_out(11, kernel, stride, kernel // 2)
        for oy in range(out):
            start = oy * stride - kernel // 2
            reach[max(start, 0):start + kernel] += 1
        assert np.array_equal(tables.valid.sum(axis=1), reach), (kernel, stride)
    with pytest.raises(ValueError, match="below the reach"):
        scatter_tables(7, 3, 1, 1, 2)
    with pytest.raises(ValueError, match="wider than the bank modulus"):
        window_tables(7, 3, 2, 1, 2)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_refuses_bad_weights_and_lanes():
    with pytest.raises(ValueError, match=r"^weight must be \[Cout, Cin, k, k\], not \[2, 3\]$"):
        StemConvBanks([StemConv(np.zeros((2, 3)), (4, 4), 1, 0, (1, 1, 0))], lanes=1, sum_bits=8)
    with pytest.raises(ValueError, match="^weight must hold int8 values$"):
        StemConvBanks([StemConv(np.full((1, 1, 1, 1), 200), (4, 4), 1, 0, (1, 1, 0))],
                      lanes=1, sum_bits=8)
    with pytest.raises(ValueError, match="^lanes must be a positive integer, not 0$"):
        StemConvBanks([StemConv(np.zeros((1, 1, 1, 1)), (4, 4), 1, 0, (1, 1, 0))],
                      lanes=0, sum_bits=8)
    gc.collect()  # the refused objects warn as they go: here, where the warning is ignored
