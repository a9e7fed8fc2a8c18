"""The input side of the accelerator: frame check and image buffer (rtl/PROTOCOL.md)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stepvit.rtl.protocol import BATCH_BITS

#: Payload of a 32-bit word stream with its end-of-packet flag (AXI4-Stream TDATA, TLAST).
WordLayout = data.StructLayout({"data": 32, "last": 1})


class FrameReceiver(wiring.Component):
    """Check image frames and keep the last good one in a buffer that the core reads.

    Frames come in transfers of ``batch`` frames (0 or 1: one): TLAST ends a transfer. A
    frame is good when it ends on word ``image_words - 1``, with TLAST if it is the
    transfer's ``batch``-th frame, without (or with: a short last transfer) before that. A
    frame whose TLAST comes early ends there; the ``batch``-th frame without TLAST on its
    last word is consumed up to its TLAST. Either is reported with ``frame_error``.

    Parameters
    ----------
    image_words : int
        Words of one image frame.

    Members
    -------
    words : In(stream.Signature(WordLayout))
        The input stream; ready only while ``enable`` is high.
    enable : In(1)
        Accept words (the top is waiting for an image).
    batch : In(BATCH_BITS)
        Frames per input transfer (the ``BATCH`` register; 0 reads as 1).
    first_word : Out(1)
        Pulse: the first word of a frame is accepted this cycle.
    frame_done : Out(1)
        Pulse: the last word of a frame is accepted this cycle.
    frame_last : Out(1)
        With ``frame_done``: the frame ended its transfer (its last word had TLAST).
    frame_error : Out(1)
        With ``frame_done``: the frame was too short or too long.
    read_addr : In(range(image_words))
        Word address of the buffer's read port.
    read_data : Out(32)
        The word at the ``read_addr`` of the previous cycle.
    """

    def __init__(self, *, image_words: int) -> None:
        if image_words < 1:
            raise ValueError(f"image_words must be at least 1, not {image_words}")
        self._image_words = image_words
        super().__init__(
            {
                "words": In(stream.Signature(WordLayout)),
                "enable": In(1),
                "batch": In(BATCH_BITS),
                "first_word": Out(1),
                "frame_done": Out(1),
                "frame_last": Out(1),
                "frame_error": Out(1),
                "read_addr": In(range(max(image_words, 2))),
                "read_data": Out(32),
            }
        )

    def elaborate(self, platform: object) -> Module:
        """Build the frame check and the buffer."""
        m = Module()
        m.submodules.buffer = buffer = Memory(shape=32, depth=self._image_words, init=[])
        write_port = buffer.write_port()
        read_port = buffer.read_port()

        word_index = Signal(range(max(self._image_words, 2)))
        overlong = Signal()  # past the last word of the frame: drop words up to TLAST
        accepted = Signal()
        at_last_word = word_index == self._image_words - 1
        # frames of this transfer before the current one; more to come while below batch - 1
        in_batch = Signal(BATCH_BITS)
        more_in_batch = in_batch + 1 < self.batch
        last = self.words.payload.last
        # a frame of the transfer before its last one ends here, without TLAST
        batch_frame_end = at_last_word & ~overlong & more_in_batch

        m.d.comb += [
            self.words.ready.eq(self.enable),
            accepted.eq(self.words.valid & self.words.ready),
            self.first_word.eq(accepted & (word_index == 0) & ~overlong),
            self.frame_done.eq(accepted & (last | batch_frame_end)),
            self.frame_last.eq(last),
            self.frame_error.eq(last & (overlong | ~at_last_word)),
            write_port.addr.eq(word_index),
            write_port.data.eq(self.words.payload.data),
            write_port.en.eq(accepted & ~overlong),
            read_port.addr.eq(self.read_addr),
            self.read_data.eq(read_port.data),
        ]
        with m.If(accepted):
            with m.If(last):
                m.d.sync += [word_index.eq(0), overlong.eq(0), in_batch.eq(0)]
            with m.Elif(batch_frame_end):
                m.d.sync += [word_index.eq(0), in_batch.eq(in_batch + 1)]
            with m.Elif(at_last_word):
                m.d.sync += [word_index.eq(0), overlong.eq(1)]
            with m.Elif(~overlong):
                m.d.sync += word_index.eq(word_index + 1)
        return m
