"""The core's first stages (the prefetch of input words, the walk that issues events), each
alone in Amaranth's simulator."""

import pytest
from amaranth.sim import Simulator

from stepvit.model.export import load_export
from stepvit.model.random_export import make_random_export
from stepvit.rtl.core_plan import SPIKE_BUFFERS, CorePlan, Sink, Source, WalkMask
from stepvit.rtl.prefetch import SpikeWordPrefetch
from stepvit.rtl.walk_stage import WalkStage


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    export = load_export(make_random_export(
        tmp_path_factory.mktemp("export"), image_shape=(1, 4, 4), patch=2, dim=8, heads=2,
        depth=1, mlp_dim=12, num_classes=3, t_max=3, seed=2))
    return CorePlan(export, lanes=3)


def spike_map_widths(plan):
    geometry = plan.geometry
    return {source: geometry.mlp_word_bits if source == Source.HIDDEN
            else geometry.dim_word_bits for source in SPIKE_BUFFERS}


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def test_prefetch_reads_each_group_of_the_active_steps_one_word_ahead(plan):
    tokens = plan.geometry.tokens
    dut = SpikeWordPrefetch(plan=plan, spike_map_widths=spike_map_widths(plan))

    async def testbench(ctx):
        ctx.set(dut.descriptor.source, Source.BUF1)
        ctx.set(dut.descriptor.groups, tokens)
        ctx.set(dut.spike_words.buf1, 0b1_0110_0101)
        assert ctx.get(dut.fetched.source) == 0b1_0110_0101
        ctx.set(dut.step_mask, 0)
        assert ctx.get(dut.found) == 0  # a pass with no active step
        ctx.set(dut.step_mask, 0b110)  # step 0 masked: the pass starts at step 1
        assert ctx.get(dut.found) == 1
        ctx.set(dut.first, 1)
        assert (ctx.get(dut.fetch_enable), ctx.get(dut.fetch_address)) == (1, tokens)
        await ctx.tick()
        ctx.set(dut.first, 0)
        assert ctx.get(dut.fetch_enable) == 0
        addresses = []
        ctx.set(dut.advance, 1)
        for _ in range(2 * tokens):
            addresses.append((ctx.get(dut.fetched.step), ctx.get(dut.fetched.group),
                              ctx.get(dut.fetch_address)))
            await ctx.tick()
            assert ctx.get(dut.fetched.valid) == (len(addresses) < 2 * tokens)
        ctx.set(dut.advance, 0)
        expected = [(1 + (i + 1) // tokens if i + 1 < 2 * tokens else 2,
                     (i + 1) % tokens if i + 1 < 2 * tokens else 0) for i in range(2 * tokens)]
        assert [(step, group) for step, group, _ in addresses[1:]] == expected[:-1]
        assert [address for _, _, address in addresses[:-1]] == \
            [step * tokens + group for step, group in expected[:-1]]

    run(dut, testbench)


def test_prefetch_picks_the_patch_bank_and_the_value_source(plan):
    dut = SpikeWordPrefetch(plan=plan, spike_map_widths=spike_map_widths(plan))

    async def testbench(ctx):
        ctx.set(dut.descriptor.source, Source.PATCH)
        ctx.set(dut.patch_words[0], 0x1234)
        ctx.set(dut.patch_words[1], 0xABCD)
        assert ctx.get(dut.fetched.source) == 0x1234
        ctx.set(dut.bank, 1)
        assert ctx.get(dut.fetched.source) == 0xABCD
        ctx.set(dut.descriptor.value_source, Source.BUF3)
        ctx.set(dut.spike_words.buf3, 0b1010_1010)
        assert ctx.get(dut.fetched.value) == 0b1010_1010

    run(dut, testbench)


def test_walk_issues_an_event_per_set_bit_for_each_chunk_then_ends_the_pass(plan):
    dut = WalkStage(plan=plan)
    word, weight_base, input_len = 0b1_0010, 10, 8

    async def testbench(ctx):
        ctx.set(dut.descriptor.walk_mask, WalkMask.ALL)
        ctx.set(dut.descriptor.chunks, 2)
        ctx.set(dut.descriptor.segments, 1)
        ctx.set(dut.descriptor.weight_base, weight_base)
        ctx.set(dut.descriptor.input_len, input_len)
        ctx.set(dut.descriptor.sink, Sink.LIF)
        ctx.set(dut.fetched.source, word)
        ctx.set(dut.fetched.step, 1)
        ctx.set(dut.fetched.group, 2)
        ctx.set(dut.prime, 1)
        assert ctx.get(dut.advance) == 1  # the walk takes the word; the next one is read
        await ctx.tick()
        ctx.set(dut.prime, 0)
        ctx.set(dut.run, 1)
        # as the prefetch would: the same group's word again, for chunk 1, then no more
        ctx.set(dut.fetched.chunk, 1)
        ctx.set(dut.fetched.valid, 1)
        events, done = [], []
        for cycle in range(4):
            if cycle == 2:
                ctx.set(dut.fetched.valid, 0)
            address = ctx.get(dut.weight_address)
            done.append(ctx.get(dut.pass_done))
            await ctx.tick()
            event = dut.event
            events.append((ctx.get(event.valid), ctx.get(event.first), ctx.get(event.last),
                           ctx.get(event.chunk), ctx.get(event.word_address), address))
        ctx.set(dut.run, 0)
        await ctx.tick()
        assert ctx.get(dut.event.valid) == 0
        word_address = 1 * plan.geometry.tokens + 2
        assert events == [
            (1, 1, 0, 0, word_address, weight_base + 1),
            (1, 0, 1, 0, word_address, weight_base + 4),
            (1, 1, 0, 1, word_address, weight_base + input_len + 1),
            (1, 0, 1, 1, word_address, weight_base + input_len + 4),
        ]
        assert done == [0, 0, 0, 1]  # no word fetched after this one: the pass ends

    run(dut, testbench)


def test_walk_closes_an_empty_chunk_with_one_event_unless_it_skips_empty_ones(plan):
    dut = WalkStage(plan=plan)

    async def testbench(ctx):
        ctx.set(dut.descriptor.walk_mask, WalkMask.ALL)
        ctx.set(dut.descriptor.chunks, 1)
        ctx.set(dut.descriptor.segments, 1)
        for skip_empty, expected in ((0, (1, 1, 1)), (1, (0, 1, 1))):
            ctx.set(dut.descriptor.skip_empty, skip_empty)
            ctx.set(dut.prime, 1)
            await ctx.tick()
            ctx.set(dut.prime, 0)
            ctx.set(dut.run, 1)
            assert ctx.get(dut.pass_done) == 1
            await ctx.tick()
            ctx.set(dut.run, 0)
            assert (ctx.get(dut.event.valid), ctx.get(dut.event.first),
                    ctx.get(dut.event.last)) == expected

    run(dut, testbench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_walk_stages_refuse_bad_parameters(plan):
    with pytest.raises(TypeError, match=r"^plan must be a CorePlan, not NoneType$"):
        WalkStage(plan=None)
    with pytest.raises(ValueError, match=r"^spike_map_widths must map spike maps to positive "
                                         r"widths, not \{<Source.BUF0: 2>: 0\}$"):
        SpikeWordPrefetch(plan=plan, spike_map_widths={Source.BUF0: 0})


@pytest.fixture(scope="module")
def segmented_plan(tmp_path_factory):
    export = load_export(make_random_export(
        tmp_path_factory.mktemp("export"), image_shape=(1, 4, 4), patch=2, dim=16, heads=2,
        depth=1, mlp_dim=12, num_classes=3, t_max=3, seed=2))
    return CorePlan(export, lanes=4, spike_word_bits=8)


def fetch_order(plan, *, mode, chunks, segments, reads):
    """Return (group, chunk, part, segment, address) of the first ``reads`` words a pass
    of ``chunks`` chunks of ``segments`` segments reads (source BUF1, steps 0 and 1)."""
    geometry = plan.geometry
    widths = {source: geometry.word_bits(geometry.mlp_word_bits if source == Source.HIDDEN
                                         else geometry.dim_word_bits)
              for source in SPIKE_BUFFERS}
    dut = SpikeWordPrefetch(plan=plan, spike_map_widths=widths)
    order = []

    async def testbench(ctx):
        ctx.set(dut.descriptor.source, Source.BUF1)
        ctx.set(dut.descriptor.walk_mask, mode)
        ctx.set(dut.descriptor.groups, geometry.tokens)
        ctx.set(dut.descriptor.chunks, chunks)
        ctx.set(dut.descriptor.segments, segments)
        ctx.set(dut.step_mask, 0b011)
        ctx.set(dut.first, 1)
        address = ctx.get(dut.fetch_address)
        await ctx.tick()
        ctx.set(dut.first, 0)
        ctx.set(dut.advance, 1)
        for _ in range(reads):
            fetched = dut.fetched
            order.append((ctx.get(fetched.group), ctx.get(fetched.chunk),
                          ctx.get(fetched.part), ctx.get(fetched.segment), address))
            address = ctx.get(dut.fetch_address)
            await ctx.tick()

    run(dut, testbench)
    return order


def test_prefetch_reads_each_chunks_segments_of_a_group_in_turn(segmented_plan):
    geometry = segmented_plan.geometry
    stride = geometry.t_max * geometry.tokens  # segment s of word w: s * T * N + w
    assert (geometry.dim_segments, geometry.mlp_segments, geometry.patch_segments) == (2, 2, 4)
    order = fetch_order(segmented_plan, mode=WalkMask.ALL, chunks=2, segments=2, reads=6)
    assert order == [(0, 0, 0, 0, 0), (0, 0, 1, 1, stride), (0, 1, 0, 0, 0),
                     (0, 1, 1, 1, stride), (1, 0, 0, 0, 1), (1, 0, 1, 1, stride + 1)]
    # the last group of step 0 goes on to step 1's first (word tokens)
    tokens = geometry.tokens
    order = fetch_order(segmented_plan, mode=WalkMask.ALL, chunks=1, segments=2,
                        reads=2 * tokens + 2)
    assert order[2 * tokens:] == [(0, 0, 0, 0, tokens), (0, 0, 1, 1, stride + tokens)]


def test_prefetch_reads_the_segment_of_a_chunks_heads_in_the_attention(segmented_plan):
    stride = segmented_plan.geometry.t_max * segmented_plan.geometry.tokens
    # Q·KV: chunk c of 4 lanes lies in segment c // 2 (8-bit segments, heads of 8)
    order = fetch_order(segmented_plan, mode=WalkMask.CHUNK_HEADS, chunks=4, segments=1,
                        reads=5)
    assert order == [(0, 0, 0, 0, 0), (0, 1, 0, 0, 0), (0, 2, 0, 1, stride),
                     (0, 3, 0, 1, stride), (1, 0, 0, 0, 1)]
    # the KV pass: chunk h is head h, in segment h
    order = fetch_order(segmented_plan, mode=WalkMask.HEAD, chunks=2, segments=1, reads=3)
    assert order == [(0, 0, 0, 0, 0), (0, 1, 0, 1, stride), (1, 0, 0, 0, 1)]


def test_walk_closes_a_chunk_at_its_last_segment_and_offsets_its_channels(segmented_plan):
    dut = WalkStage(plan=segmented_plan)
    weight_base = 10

    async def testbench(ctx):
        ctx.set(dut.descriptor.walk_mask, WalkMask.ALL)
        ctx.set(dut.descriptor.chunks, 1)
        ctx.set(dut.descriptor.segments, 2)
        ctx.set(dut.descriptor.weight_base, weight_base)
        ctx.set(dut.descriptor.input_len, 16)
        ctx.set(dut.descriptor.sink, Sink.LIF)
        ctx.set(dut.fetched.source, 0b0000_0100)  # segment 0: channel 2
        ctx.set(dut.prime, 1)
        await ctx.tick()
        ctx.set(dut.prime, 0)
        ctx.set(dut.run, 1)
        # segment 1 (channels 8-15): channels 9 and 11
        ctx.set(dut.fetched.source, 0b0000_1010)
        ctx.set(dut.fetched.part, 1)
        ctx.set(dut.fetched.segment, 1)
        ctx.set(dut.fetched.channel, 8)
        ctx.set(dut.fetched.valid, 1)
        events = []
        for cycle in range(3):
            if cycle == 1:
                ctx.set(dut.fetched.valid, 0)
            address = ctx.get(dut.weight_address)
            await ctx.tick()
            event = dut.event
            events.append((ctx.get(event.first), ctx.get(event.last), address))
        assert events == [(1, 0, weight_base + 2), (0, 0, weight_base + 9),
                          (0, 1, weight_base + 11)]

    run(dut, testbench)
