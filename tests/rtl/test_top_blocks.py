"""The top's blocks (the scheduler of images in flight, the latency stamps), in Amaranth's
simulator."""

import pytest
from amaranth.sim import Simulator

from stepvit.rtl.latency import LatencyStamps
from stepvit.rtl.scheduler import ImageScheduler


def run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


async def pulse(ctx, *signals):
    """Hold ``signals`` high for one clock edge."""
    for signal in signals:
        ctx.set(signal, 1)
    await ctx.tick()
    for signal in signals:
        ctx.set(signal, 0)


async def frame(ctx, dut, *, error=0, last=1):
    """A frame ends in the image buffer."""
    ctx.set(dut.frame_error, error)
    ctx.set(dut.frame_last, last)
    await pulse(ctx, dut.frame_done)
    ctx.set(dut.frame_error, 0)
    ctx.set(dut.frame_last, 0)


def test_scheduler_loads_starts_and_sends_an_image():
    dut = ImageScheduler()

    async def testbench(ctx):
        assert ctx.get(dut.buffer_free) == 1
        assert (ctx.get(dut.load), ctx.get(dut.start), ctx.get(dut.send)) == (0, 0, 0)
        await frame(ctx, dut, last=1)
        assert ctx.get(dut.buffer_free) == 0
        assert ctx.get(dut.load) == 1
        await ctx.tick()
        assert ctx.get(dut.load) == 0  # loading: one pulse
        await pulse(ctx, dut.loaded)
        assert ctx.get(dut.buffer_free) == 1
        assert ctx.get(dut.start) == 1
        await ctx.tick()
        assert ctx.get(dut.start) == 0
        assert ctx.get(dut.end) == 1
        ctx.set(dut.done, 1)
        assert ctx.get(dut.send) == 1
        await ctx.tick()
        ctx.set(dut.done, 0)
        assert ctx.get(dut.send) == 0
        assert ctx.get(dut.error) == 0
        await pulse(ctx, dut.sent)
        assert (ctx.get(dut.load), ctx.get(dut.start), ctx.get(dut.send)) == (0, 0, 0)

    run(dut, testbench)


def test_scheduler_loads_the_next_image_while_one_computes_and_starts_it_after_the_send():
    dut = ImageScheduler()

    async def testbench(ctx):
        await frame(ctx, dut, last=0)
        await ctx.tick()
        await pulse(ctx, dut.loaded)
        assert ctx.get(dut.start) == 1
        await ctx.tick()  # image 0 computes
        assert ctx.get(dut.end) == 0
        assert ctx.get(dut.buffer_free) == 1  # the next frame streams in meanwhile
        await frame(ctx, dut, last=1)
        assert ctx.get(dut.load) == 1
        await ctx.tick()
        await pulse(ctx, dut.loaded)
        for _ in range(5):  # image 1 waits while image 0 computes
            assert ctx.get(dut.start) == 0
            await ctx.tick()
        assert ctx.get(dut.buffer_free) == 1
        ctx.set(dut.done, 1)
        assert ctx.get(dut.send) == 1
        await ctx.tick()
        ctx.set(dut.done, 0)
        for _ in range(5):  # ... and while its packet is sent
            assert ctx.get(dut.start) == 0
            await ctx.tick()
        await pulse(ctx, dut.sent)
        assert ctx.get(dut.start) == 1
        await ctx.tick()
        assert ctx.get(dut.end) == 1

    run(dut, testbench)


def test_scheduler_sends_a_dropped_frames_error_packet_in_order_and_flags_it():
    dut = ImageScheduler()

    async def testbench(ctx):
        await frame(ctx, dut)
        await ctx.tick()
        await pulse(ctx, dut.loaded)
        await ctx.tick()  # image 0 computes
        await frame(ctx, dut, error=1)  # a dropped frame: no load, its packet after image 0
        assert ctx.get(dut.frame_error_seen) == 1
        for _ in range(4):
            assert (ctx.get(dut.load), ctx.get(dut.send)) == (0, 0)
            await ctx.tick()
        assert ctx.get(dut.buffer_free) == 1
        ctx.set(dut.done, 1)
        await ctx.tick()
        ctx.set(dut.done, 0)
        assert ctx.get(dut.error) == 0
        await pulse(ctx, dut.sent)
        assert (ctx.get(dut.send), ctx.get(dut.start)) == (1, 0)
        await ctx.tick()
        assert ctx.get(dut.error) == 1
        await pulse(ctx, dut.sent)
        assert ctx.get(dut.frame_error_seen) == 1  # sticky
        await pulse(ctx, dut.clear_error)
        assert ctx.get(dut.frame_error_seen) == 0

    run(dut, testbench)


def test_latency_stamps_time_each_image_in_flight():
    dut = LatencyStamps(slots=3)

    async def testbench(ctx):
        cycle = busy = 0

        async def tick(**pulses):
            nonlocal cycle, busy
            for name in pulses:
                ctx.set(getattr(dut, name), 1)
            busy += ctx.get(dut.busy)  # a cycle in flight, counted at its edge
            await ctx.tick()
            cycle += 1
            for name in pulses:
                ctx.set(getattr(dut, name), 0)

        assert ctx.get(dut.busy) == 0
        firsts = []
        for gap in (2, 5, 1):  # three images in flight, first words at different cycles
            for _ in range(gap):
                await tick()
            firsts.append(cycle)
            await tick(first_word=1)
        assert ctx.get(dut.busy) == 1
        for image, first in enumerate(firsts):
            for _ in range(3):
                await tick()
            send = cycle
            await tick(send=1)
            # the first result word is offered the cycle after `send`
            assert ctx.get(dut.cycles) == send + 1 - first, image
            await tick()
            await tick(sent=1)
            assert ctx.get(dut.images) == image + 1
            assert ctx.get(dut.last_cycles) == send + 1 - first
        assert ctx.get(dut.busy) == 0
        # BUSY_CYCLES: the cycles from the first image's first word to the last packet's
        # end, once each, however many images overlapped; idle cycles add nothing
        assert ctx.get(dut.busy_cycles) == busy == cycle - 1 - firsts[0]
        for _ in range(4):
            await tick()
        assert ctx.get(dut.busy_cycles) == busy

    run(dut, testbench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_latency_stamps_refuse_no_slots():
    with pytest.raises(ValueError, match=r"^slots must be a positive integer, not 0$"):
        LatencyStamps(slots=0)
