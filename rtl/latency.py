"""Latency stamps: each image's cycles, from its first word in to its first result word out.

A free-running cycle counter is stamped when an image's first word is accepted, one stamp
per image in flight (a ring); when its packet is sent the difference is its latency. The
packet carries it, and the CYCLES and IMAGES registers report the last one. BUSY_CYCLES
counts the cycles with any image in flight: a stream's throughput, where an image's
latency includes its wait behind the images before it.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: Bits of the cycle counter, the stamps and the counts (a register's width).
COUNT_BITS = 32


class LatencyStamps(wiring.Component):
    """Stamp each image in flight and report its cycles when its packet is sent.

    Parameters
    ----------
    slots : int
        Images that can be in flight at once (stamps in the ring), at least 1.

    Members
    -------
    first_word : In(1)
        Pulse: an image's first word is accepted (stamp it).
    send : In(1)
        Pulse: the oldest image's packet is sent; ``cycles`` is its latency from the next
        cycle on (its first word is offered the cycle after ``send``).
    sent : In(1)
        Pulse: a packet's last word went out.
    cycles : Out(32)
        The latency of the packet being sent.
    last_cycles : Out(32)
        The latency of the last packet sent (the CYCLES register).
    images : Out(32)
        Packets sent since reset (the IMAGES register).
    busy : Out(1)
        An image is in flight: its first word accepted, its packet not yet all sent.
    busy_cycles : Out(32)
        Cycles with ``busy`` high since reset (wraps; the BUSY_CYCLES register): read before
        and after images streamed back to back, the difference is their cycles together,
        overlaps counted once.
    """

    def __init__(self, *, slots: int) -> None:
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be a positive integer, not {slots!r}")
        self._slots = slots
        super().__init__({
            "first_word": In(1),
            "send": In(1),
            "sent": In(1),
            "cycles": Out(COUNT_BITS),
            "last_cycles": Out(COUNT_BITS),
            "images": Out(COUNT_BITS),
            "busy": Out(1),
            "busy_cycles": Out(COUNT_BITS),
        })

    def _next_slot(self, slot: Signal) -> Value:
        """Return the stamp slot after ``slot`` in the ring."""
        return Mux(slot == self._slots - 1, 0, slot + 1)

    def elaborate(self, platform: object) -> Module:
        """Build the cycle counter, the ring of stamps and the counts."""
        m = Module()
        now = Signal(COUNT_BITS)
        m.d.sync += now.eq(now + 1)
        stamps = Array(Signal(COUNT_BITS, name=f"stamp{i}") for i in range(self._slots))
        stamp_in = Signal(range(self._slots))
        stamp_out = Signal(range(self._slots))
        in_flight = Signal(range(self._slots + 1))
        with m.If(self.first_word):
            m.d.sync += [stamps[stamp_in].eq(now), stamp_in.eq(self._next_slot(stamp_in))]
        with m.If(self.send):
            m.d.sync += [self.cycles.eq(now + 1 - stamps[stamp_out]),
                         stamp_out.eq(self._next_slot(stamp_out))]
        m.d.sync += in_flight.eq(in_flight + self.first_word - self.sent)
        with m.If(self.sent):
            m.d.sync += [self.images.eq(self.images + 1), self.last_cycles.eq(self.cycles)]
        m.d.comb += self.busy.eq(in_flight != 0)
        with m.If(self.busy):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        return m
