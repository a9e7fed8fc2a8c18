"""The core's pipeline stages after the walk (accumulate, sum, fire), each alone in Amaranth's
simulator, against small reference computations."""

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from stepvit.model.export import load_export
from stepvit.model.golden import lif_step
from stepvit.model.random_export import make_random_export
from stepvit.rtl.accumulate_stage import AccumulateStage
from stepvit.rtl.core_pipeline import current_bits
from stepvit.rtl.core_plan import CorePlan, Operand, Sink, Source, WeightSource
from stepvit.rtl.fire_stage import FireStage
from stepvit.rtl.sum_stage import SumStage

LANES = 3  # dim 8 in chunks of 3: the last chunk is ragged (2 lanes)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    export = load_export(make_random_export(
        tmp_path_factory.mktemp("export"), image_shape=(1, 4, 4), patch=2, dim=8, heads=2,
        depth=1, mlp_dim=12, num_classes=3, t_max=3, seed=2))
    return CorePlan(export, lanes=LANES)


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (lane * bits) for lane, v in enumerate(values))


def unpack(word, bits, lanes=LANES):
    values = [(word >> (lane * bits)) & ((1 << bits) - 1) for lane in range(lanes)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in values]


def test_fire_stage_fires_the_layers_lanes_writes_them_and_counts_them(plan):
    geometry = plan.geometry
    membrane_bits, head_in = geometry.bits["membrane"], 8
    dut = FireStage(plan=plan, layers=9, head_in_layer=head_in)
    theta, membrane, current = [5, 7, 3], [4, -2, 9], [3, 9, 1]
    expected_membrane, expected_spikes = lif_step(
        torch.tensor(membrane), torch.tensor(current), torch.tensor(theta),
        geometry.leak_shift, geometry.reset)

    async def testbench(ctx):
        ctx.set(dut.theta, pack(theta, membrane_bits))
        ctx.set(dut.membrane, pack(membrane, membrane_bits))
        for lane in range(LANES):
            ctx.set(dut.current[lane], current[lane])
        ctx.set(dut.descriptor.layer, head_in)
        ctx.set(dut.descriptor.target, Source.BUF0)
        ctx.set(dut.event.group_index, 5)
        ctx.set(dut.event.word_address, 4)
        ctx.set(dut.event.chunk, 2)  # the ragged chunk: lane 2 is past dim and never fires
        ctx.set(dut.valid, 1)
        assert unpack(ctx.get(dut.membrane_write.data), membrane_bits) == \
            expected_membrane.tolist()
        assert (ctx.get(dut.membrane_write.en), ctx.get(dut.membrane_write.addr)) == (1, 5)
        assert expected_spikes.tolist() == [1, 1, 1]
        assert ctx.get(dut.spikes) == 0b011
        assert (ctx.get(dut.spike_write), ctx.get(dut.spike_address),
                ctx.get(dut.spike_chunk)) == (1, 4, 2)
        assert ctx.get(dut.stream_write.en) == 0  # not a to_stream pass
        await ctx.tick()
        ctx.set(dut.valid, 0)
        assert ctx.get(dut.counts[head_in]) == 0  # counted a cycle later
        await ctx.tick()
        assert ctx.get(dut.counts[head_in]) == 2
        assert [ctx.get(dut.head_counts[c]) for c in range(9)] == [0] * 6 + [1, 1, 0]
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert ctx.get(dut.counts[head_in]) == 0
        assert [ctx.get(dut.head_counts[c]) for c in range(9)] == [0] * 9

    run(dut, testbench)


def test_fire_stage_starts_the_first_step_from_rest_and_writes_the_stream(plan):
    geometry = plan.geometry
    membrane_bits, stream_bits = geometry.bits["membrane"], geometry.bits["stream"]
    dut = FireStage(plan=plan, layers=9, head_in_layer=8)

    async def testbench(ctx):
        ctx.set(dut.theta, pack([4, 4, 4], membrane_bits))
        ctx.set(dut.membrane, pack([100, 100, 100], membrane_bits))  # ignored: first step
        ctx.set(dut.spike_value, pack([-7, 11, 13], stream_bits))
        for lane, value in enumerate([4, 3, 9]):
            ctx.set(dut.current[lane], value)
        ctx.set(dut.descriptor.to_stream, 1)
        ctx.set(dut.event.first_step, 1)
        ctx.set(dut.event.stream_address, 6)
        ctx.set(dut.valid, 1)
        assert ctx.get(dut.spikes) == 0b101
        assert (ctx.get(dut.stream_write.en), ctx.get(dut.stream_write.addr)) == (1, 6)
        assert unpack(ctx.get(dut.stream_write.data), stream_bits) == [-7, 0, 13]
        ctx.set(dut.valid, 0)
        assert (ctx.get(dut.membrane_write.en), ctx.get(dut.stream_write.en),
                ctx.get(dut.spike_write)) == (0, 0, 0)

    run(dut, testbench)


def test_sum_stage_adds_the_operand_and_routes_the_chunk_to_its_sink(plan):
    geometry = plan.geometry
    bits = geometry.bits
    dut = SumStage(plan=plan)
    sums, stream = [10, -4, 7], [100, -50, 25]  # the sums hold the biases already

    async def testbench(ctx):
        for lane in range(LANES):
            ctx.set(dut.sums[lane], sums[lane])
        ctx.set(dut.stream, pack(stream, bits["stream"]))
        ctx.set(dut.descriptor.operand, Operand.STREAM)
        ctx.set(dut.descriptor.use_bias, 1)
        ctx.set(dut.descriptor.sink, Sink.STORE_STREAM)
        ctx.set(dut.event.stream_address, 7)
        ctx.set(dut.valid, 1)
        totals = [s + o for s, o in zip(sums, stream)]
        assert unpack(ctx.get(dut.stream_write.data), bits["stream"]) == totals
        assert (ctx.get(dut.stream_write.en), ctx.get(dut.stream_write.addr)) == (1, 7)
        ctx.set(dut.event.stream_zero, 1)  # the step's stream is all zero
        assert unpack(ctx.get(dut.stream_write.data), bits["stream"]) == sums
        ctx.set(dut.event.stream_zero, 0)
        ctx.set(dut.descriptor.sink, Sink.LIF)
        ctx.set(dut.event.group_index, 3)
        await ctx.tick()
        ctx.set(dut.valid, 0)
        assert ctx.get(dut.stream_write.en) == 0
        assert ctx.get(dut.fire_valid) == 1
        assert ctx.get(dut.fire_event.group_index) == 3
        assert [ctx.get(dut.fire_current[lane]) for lane in range(LANES)] == totals
        await ctx.tick()
        assert ctx.get(dut.fire_valid) == 0

    run(dut, testbench)


def test_sum_stage_presets_the_logits_and_adds_each_class_chunk(plan):
    dut = SumStage(plan=plan)
    classes = plan.geometry.num_classes

    async def testbench(ctx):
        ctx.set(dut.preset, 1)
        await ctx.tick()
        ctx.set(dut.preset, 0)
        assert [ctx.get(dut.logits[k]) for k in range(classes)] == plan.head_bias
        for lane, value in enumerate([5, -6, 7]):
            ctx.set(dut.sums[lane], value)
        ctx.set(dut.descriptor.sink, Sink.LOGITS)
        ctx.set(dut.valid, 1)
        for _ in range(2):
            await ctx.tick()
        ctx.set(dut.valid, 0)
        expected = [bias + 2 * value for bias, value in zip(plan.head_bias, [5, -6, 7])]
        assert [ctx.get(dut.logits[k]) for k in range(classes)] == expected
        assert ctx.get(dut.current_write.en) == 0

    run(dut, testbench)


@pytest.mark.parametrize("use_bias", [0, 1])
def test_accumulate_stage_sums_shifted_weights_over_a_chunk_from_its_biases(plan, use_bias):
    dut = AccumulateStage(plan=plan)
    rng = np.random.default_rng(3)
    events = [(rng.integers(-128, 128, LANES).tolist(), int(rng.integers(0, 4)))
              for _ in range(4)]
    bias = [5, -9, 300]

    async def testbench(ctx):
        ctx.set(dut.bias, pack(bias, plan.geometry.bias_bits))
        ctx.set(dut.descriptor.use_bias, use_bias)
        ctx.set(dut.descriptor.weights, WeightSource.ROM)
        ctx.set(dut.descriptor.count_planes, 1)  # the head's count planes shift the weights
        ctx.set(dut.event.chunk, 1)
        ctx.set(dut.event.group_index, 2)
        for index, (weights, plane) in enumerate(events):
            ctx.set(dut.weights, pack(weights, 8))
            ctx.set(dut.event.plane, plane)
            ctx.set(dut.event.valid, 1)
            ctx.set(dut.event.has_weight, 1)
            ctx.set(dut.event.first, index == 0)
            ctx.set(dut.event.last, index == len(events) - 1)
            await ctx.tick()
            assert ctx.get(dut.valid) == (index == len(events) - 1)
        ctx.set(dut.event.valid, 0)
        expected = [use_bias * bias[lane] + sum(w[lane] << plane for w, plane in events)
                    for lane in range(LANES)]
        assert [ctx.get(dut.sums[lane]) for lane in range(LANES)] == expected
        assert (ctx.get(dut.closed.chunk), ctx.get(dut.closed.group_index)) == (1, 2)
        await ctx.tick()
        assert ctx.get(dut.valid) == 0

    run(dut, testbench)


def test_accumulate_stage_adds_v_into_a_kv_row_unless_it_is_fresh(plan):
    geometry = plan.geometry
    head_dim, attention_bits = geometry.head_dim, geometry.bits["attention"]
    dut = AccumulateStage(plan=plan)
    row, segment = [3, 5, 0, 1][:head_dim], 0b1011 & ((1 << head_dim) - 1)

    async def testbench(ctx):
        ctx.set(dut.descriptor.sink, Sink.KV_ADD)
        ctx.set(dut.kv_rows[0], pack(row, attention_bits))
        ctx.set(dut.event.kv_address[0], 9)
        ctx.set(dut.event.value_segment[0], segment)
        ctx.set(dut.event.valid, 1)
        ctx.set(dut.event.has_weight, 1)
        added = [value + ((segment >> j) & 1) for j, value in enumerate(row)]
        assert ctx.get(dut.kv_write[0].en) == 1
        assert ctx.get(dut.kv_write[0].addr) == 9
        assert unpack(ctx.get(dut.kv_write[0].data), attention_bits, head_dim) == added
        ctx.set(dut.event.kv_fresh, 1)  # not added to since the KV pass began: reads as 0
        assert unpack(ctx.get(dut.kv_write[0].data), attention_bits, head_dim) == \
            [(segment >> j) & 1 for j in range(head_dim)]
        ctx.set(dut.event.has_weight, 0)
        assert ctx.get(dut.kv_write[0].en) == 0

    run(dut, testbench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_stages_refuse_bad_parameters(plan):
    with pytest.raises(TypeError, match=r"^plan must be a CorePlan, not dict$"):
        SumStage(plan={})
    with pytest.raises(ValueError, match=r"^layers must be a positive integer, not 0$"):
        FireStage(plan=plan, layers=0, head_in_layer=0)
    with pytest.raises(ValueError, match=r"^head_in_layer must be a layer index below 9, "
                                         r"not 9$"):
        FireStage(plan=plan, layers=9, head_in_layer=9)
    assert current_bits(plan.geometry) > plan.geometry.sum_bits
