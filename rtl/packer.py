"""The output side of the accelerator: one result packet per image (rtl/PROTOCOL.md)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from stepvit.rtl.frame import WordLayout
from stepvit.rtl.protocol import ERROR_CLASS, packet_words


class ResultPacker(wiring.Component):
    """Stream the result of one image: ``K`` logits, the class, the cycles, the spike counts.

    The packet of a dropped frame has the class word ``0xFFFFFFFF`` and zero logits and
    spike counts. TLAST marks the last word of a packet whose ``end`` is high: that of an
    image whose frame ended its input transfer (rtl/PROTOCOL.md, batches).

    Parameters
    ----------
    num_classes : int
        Logits per packet.
    logit_bits : int
        Width of a signed logit (sign-extended to 32 bits in the packet).
    layers : int
        Spike counts per packet.

    Members
    -------
    send : In(1)
        Pulse: start a packet (the inputs hold their values until ``sent``).
    error : In(1)
        The packet is the error packet of a dropped frame.
    end : In(1)
        The packet ends its output transfer: TLAST on its last word.
    logits : In(ArrayLayout(signed(logit_bits), num_classes))
    predicted : In(unsigned(8))
    cycles : In(32)
    spike_counts : In(ArrayLayout(unsigned(32), layers))
    words : Out(stream.Signature(WordLayout))
        The output stream.
    sent : Out(1)
        Pulse: the last word of the packet is accepted this cycle.
    """

    def __init__(self, *, num_classes: int, logit_bits: int, layers: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, not {num_classes}")
        if not 1 <= logit_bits <= 32:
            raise ValueError(f"logit_bits must be 1..32, not {logit_bits}")
        self._num_classes = num_classes
        self._layers = layers
        super().__init__(
            {
                "send": In(1),
                "error": In(1),
                "end": In(1),
                "logits": In(data.ArrayLayout(signed(logit_bits), num_classes)),
                "predicted": In(unsigned(8)),
                "cycles": In(32),
                "spike_counts": In(data.ArrayLayout(unsigned(32), layers)),
                "words": Out(stream.Signature(WordLayout)),
                "sent": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        """Build the packer."""
        m = Module()
        total = packet_words(self._num_classes, self._layers)
        word_index = Signal(range(total))
        word = Signal(32)

        with m.Switch(word_index):
            for index in range(self._num_classes):
                with m.Case(index):
                    m.d.comb += word.eq(self.logits[index].as_signed())
            with m.Case(self._num_classes):
                m.d.comb += word.eq(self.predicted)
            with m.Case(self._num_classes + 1):
                m.d.comb += word.eq(self.cycles)
            for layer in range(self._layers):
                with m.Case(self._num_classes + 2 + layer):
                    m.d.comb += word.eq(self.spike_counts[layer])

        is_cycles_word = word_index == self._num_classes + 1
        is_class_word = word_index == self._num_classes
        at_last = word_index == total - 1
        m.d.comb += [
            self.words.payload.data.eq(word),
            self.words.payload.last.eq(at_last & self.end),
            self.sent.eq(self.words.valid & self.words.ready & at_last),
        ]
        with m.If(self.error & is_class_word):
            m.d.comb += self.words.payload.data.eq(ERROR_CLASS)
        with m.Elif(self.error & ~is_cycles_word):
            m.d.comb += self.words.payload.data.eq(0)

        with m.If(self.send):
            m.d.sync += [self.words.valid.eq(1), word_index.eq(0)]
        with m.Elif(self.words.valid & self.words.ready):
            m.d.sync += word_index.eq(word_index + 1)
            with m.If(at_last):
                m.d.sync += [self.words.valid.eq(0), word_index.eq(0)]
        return m
