"""The scheduler of images in flight: which image loads, computes and sends its packet when.

Images overlap: a frame streams into the image buffer while the image before it loads into
the core's free patch bank or computes, so back-to-back images cost about the larger of
their load and compute times, not the sum (rtl/PROTOCOL.md). Slots, oldest first:
computing (or its packet sending), waiting (loaded, or a dropped frame's error packet to
come), the image buffer (full or loading).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class ImageScheduler(wiring.Component):
    """Hand frames from the image buffer to the core and results to the packer, in order.

    A checked frame loads into the core when no image is loading or waiting; a loaded image
    (or a dropped frame, which skips the core) starts when nothing computes or sends; the
    packer sends when the core is done (or at once for a dropped frame).

    Members
    -------
    frame_done, frame_error, frame_last : In(1)
        From the frame receiver: a frame ended this cycle; it is a dropped one; it ended its
        input transfer (TLAST).
    buffer_free : Out(1)
        The image buffer may take the next frame (it holds none not yet loaded).
    load : Out(1)
        Pulse: the core loads the frame in the image buffer.
    loaded : In(1)
        Pulse from the core: the load is done.
    start : Out(1)
        Pulse: the core computes the waiting image.
    done : In(1)
        Pulse from the core: its results are valid.
    send : Out(1)
        Pulse: the packer sends the packet of the oldest image.
    error : Out(1)
        The packet being sent is that of a dropped frame.
    end : Out(1)
        The packet being sent ends its output transfer (its frame ended the input one).
    sent : In(1)
        Pulse from the packer: the packet's last word went out.
    clear_error : In(1)
        Pulse: clear ``frame_error`` (CONTROL.clear_error written).
    frame_error_seen : Out(1)
        STATUS.frame_error: a frame was dropped since the last ``clear_error`` (sticky).
    """

    def __init__(self) -> None:
        super().__init__({
            "frame_done": In(1),
            "frame_error": In(1),
            "frame_last": In(1),
            "buffer_free": Out(1),
            "load": Out(1),
            "loaded": In(1),
            "start": Out(1),
            "done": In(1),
            "send": Out(1),
            "error": Out(1),
            "end": Out(1),
            "sent": In(1),
            "clear_error": In(1),
            "frame_error_seen": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the three slots and the moves between them."""
        m = Module()
        frame_full = Signal()  # the image buffer holds a frame not yet loaded
        frame_bad = Signal()  # ... and it is a dropped frame (no load, an error packet)
        loading = Signal()
        waiting = Signal()  # the next image to start: loaded, or a dropped frame
        waiting_bad = Signal()
        computing = Signal()
        sending = Signal()
        # Batches: a packet ends its output transfer (TLAST) when its frame ended its input
        # transfer, so B frames in one MM2S transfer answer as B packets in one S2MM one.
        frame_end = Signal()
        waiting_end = Signal()
        m.d.comb += self.buffer_free.eq(~frame_full)
        with m.If(self.frame_done):
            m.d.sync += [frame_full.eq(1), frame_bad.eq(self.frame_error),
                         frame_end.eq(self.frame_last)]
        with m.If(frame_full & ~loading & ~waiting):
            with m.If(frame_bad):
                m.d.sync += [frame_full.eq(0), waiting.eq(1), waiting_bad.eq(1),
                             waiting_end.eq(frame_end)]
            with m.Else():
                m.d.comb += self.load.eq(1)
                m.d.sync += loading.eq(1)
        with m.If(self.loaded):
            m.d.sync += [loading.eq(0), frame_full.eq(0), waiting.eq(1), waiting_bad.eq(0),
                         waiting_end.eq(frame_end)]
        with m.If(waiting & ~computing & ~sending):
            m.d.sync += [waiting.eq(0), self.end.eq(waiting_end)]
            with m.If(waiting_bad):
                m.d.comb += self.send.eq(1)
                m.d.sync += [sending.eq(1), self.error.eq(1)]
            with m.Else():
                m.d.comb += self.start.eq(1)
                m.d.sync += computing.eq(1)
        with m.If(self.done):
            m.d.comb += self.send.eq(1)
            m.d.sync += [computing.eq(0), sending.eq(1), self.error.eq(0)]
        with m.If(self.sent):
            m.d.sync += sending.eq(0)

        with m.If(self.clear_error):
            m.d.sync += self.frame_error_seen.eq(0)
        with m.If(self.frame_done & self.frame_error):
            m.d.sync += self.frame_error_seen.eq(1)
        return m
