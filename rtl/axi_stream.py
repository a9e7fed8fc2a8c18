"""An AXI4 read master that streams a run of words from DDR through a FIFO, as it is taken.

The read half of an activation kept in DDR (docs/ddr-dataflow.md, "Still to build", item 2):
a pass that reads a region of activations in order (the residual stream, a spike map) takes
its words from a FIFO this reader keeps filled, where the design now reads an on-chip
buffer. Its write half is :class:`~stepvit.rtl.axi_writer.AxiBurstWriter`. Built alone and
tested against the DDR model of ``rtl/ddr_model.py`` (tests/rtl/test_axi_stream.py);
the residual stream's reads in a design that keeps it in DDR (:mod:`stepvit.rtl.stream_ddr`).

- **Credit**: a burst is requested only when the FIFO has room for its beats besides those
  already requested and not yet pushed, so ``rready`` stays high and the bus never waits
  for the consumer: a consumer that pauses pauses the requests, not the data channel.
- **Bursts**: :class:`~stepvit.rtl.axi_reader.AxiBurstReader`'s (at most ``max_burst``
  beats, never across a 4 KB boundary, ``arvalid`` held until accepted); words of whole
  beats, the low beat first.
- **Throughput**: the beats on their way are at most the FIFO's, so a memory of latency
  ``L`` cycles gives at most ``fifo beats / L`` beats a cycle; a FIFO of ``L`` beats plus
  two bursts keeps a consumer that takes a beat a cycle waiting for the latency once per
  run.
- **Runs back to back**: the next run may start as soon as every burst of the one before
  has been requested (``run_ready``), so a pass that reads a run per token (a slice of
  each token's words) pays the latency once, not once per token; the words of the runs
  follow each other in the FIFO.
- **Errors**: a beat whose ``rresp`` is not OKAY sets ``error`` until a ``start`` finds
  the reader idle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import (
    BURST_INCR,
    BeatsPerWord,
    assembled_word,
    burst_length,
    check_shape,
    read_channels,
    times_constant,
)


def least_fifo_words(per_word: int, max_burst: int) -> int:
    """Return the fewest words of ``per_word`` beats a FIFO the credit works with holds.

    A burst's beats besides a word's on their way (a burst may end inside a word).
    """
    return -(-(max_burst + per_word - 1) // per_word)


def check_fifo(per_word: int, max_burst: int, fifo_words: int) -> None:
    """Refuse a FIFO the credit would never let the next burst into.

    It must hold a burst's beats besides a word's on their way (a burst may end inside a
    word).

    Raises
    ------
    ValueError
        Naming the least ``fifo_words``.
    """
    least = least_fifo_words(per_word, max_burst)
    if fifo_words < least:
        raise ValueError(f"fifo_words ({fifo_words}) must hold a burst of {max_burst} "
                         f"beats and a word begun: {least} words of {per_word} beats")


class AxiStreamReader(BeatsPerWord, wiring.Component):
    """Read runs of words, each ``words`` from byte address ``base``, into one stream.

    Parameters
    ----------
    data_width, word_width, max_burst, addr_width : int
        As :class:`~stepvit.rtl.axi_reader.AxiBurstReader`'s.
    depth : int
        Words a run has at most.
    fifo_words : int
        Words the FIFO holds: at least a burst's beats (``max_burst``) and a word begun
        (``beats_per_word - 1``), or the credit would never allow the next burst.

    Members
    -------
    start : In(1)
        Pulse (while ``run_ready``): stream ``words`` words from ``base``, after the runs
        started before it.
    run_ready : Out(1)
        A ``start`` is taken: every burst of the runs before it has been requested (their
        data may still be on its way, or in the FIFO).
    base : In(addr_width)
        The run's first byte, aligned to a beat.
    words : In(range(depth + 1))
        The run's words.
    busy : Out(1)
        The runs' words are not all taken yet (to request, on their way, or in the FIFO).
    error : Out(1)
        A beat since the ``start`` that found the reader idle came back with an error
        response.
    arvalid, arready, araddr, arlen, arsize, arburst : the read address channel
    rvalid, rready, rdata, rresp, rlast : the read data channel
    word_valid, word_ready, word_data : the run's words, in order
    level : Out(range(fifo_words + 1))
        The words in the FIFO (a consumer's credit: ``word_valid`` is ``level != 0``).
    """

    def __init__(self, *, data_width: int = 64, word_width: int = 64, depth: int = 1024,
                 fifo_words: int = 32, max_burst: int = 16, addr_width: int = 32) -> None:
        check_shape(data_width, word_width, depth, max_burst)
        check_fifo(word_width // data_width, max_burst, fifo_words)
        self._data_width, self._word_width = data_width, word_width
        self._depth, self._max_burst, self._fifo_words = depth, max_burst, fifo_words
        self._beat_bytes = data_width // 8
        super().__init__({
            "start": In(1),
            "run_ready": Out(1),
            "base": In(addr_width),
            "words": In(range(depth + 1)),
            "busy": Out(1),
            "error": Out(1),
            **read_channels(addr_width, data_width),
            "word_valid": Out(1),
            "word_ready": In(1),
            "word_data": Out(word_width),
            "level": Out(range(fifo_words + 1)),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the FIFO, the request side (bursts on credit) and the data side."""
        m = Module()
        per_word = self.beats_per_word
        total = self._depth * per_word
        shift = self._beat_bytes.bit_length() - 1
        m.submodules.fifo = fifo = SyncFIFO(width=self._word_width, depth=self._fifo_words)
        m.d.comb += [self.arsize.eq(shift), self.arburst.eq(BURST_INCR),
                     self.word_valid.eq(fifo.r_rdy), self.word_data.eq(fifo.r_data),
                     fifo.r_en.eq(self.word_ready), self.level.eq(fifo.level)]

        to_request = Signal(range(total + 1))  # beats of this run not yet requested
        fifo_beats = self._fifo_words * per_word
        # beats requested and not yet received (a run's, and what is still on its way of
        # the runs before it: at most the FIFO's), and beats requested and not yet pushed
        to_receive = Signal(range(total + fifo_beats + 1))
        in_flight = Signal(range(fifo_beats + 1))
        address = Signal.like(self.araddr)
        pending = Signal()  # a burst's address is on the channel, waiting for arready
        length = burst_length(m, address, to_request, beat_bytes=self._beat_bytes,
                              max_burst=self._max_burst)
        m.d.comb += [self.araddr.eq(address), self.arlen.eq(length - 1),
                     self.arvalid.eq(pending), self.run_ready.eq(~pending & (to_request == 0))]

        # the credit: the FIFO's free words, in beats, less the beats on their way
        free_beats = times_constant(self._fifo_words - fifo.level, per_word, len(in_flight))
        room = Signal()
        m.d.comb += room.eq(in_flight + length <= free_beats)
        accepted = Signal()
        m.d.comb += accepted.eq(pending & self.arready)
        with m.If(accepted):
            m.d.sync += [address.eq(address + (length << shift)),
                         to_request.eq(to_request - length), pending.eq(0)]
        with m.Elif(~pending & (to_request != 0) & room):
            m.d.sync += pending.eq(1)

        # the data: beats into the word register, a word pushed as its last beat arrives
        word = Signal(self._word_width)
        beat = Signal(range(max(per_word, 2)))
        assembled = assembled_word(m, word, self.rdata, data_width=self._data_width)
        m.d.comb += [self.rready.eq(to_receive != 0), fifo.w_data.eq(assembled)]
        received = Signal()
        m.d.comb += received.eq(self.rvalid & self.rready)
        pushed = Signal()
        with m.If(received):
            m.d.sync += word.eq(assembled)
            with m.If(self.rresp != 0):
                m.d.sync += self.error.eq(1)
            with m.If(beat == per_word - 1):
                m.d.comb += [fifo.w_en.eq(1), pushed.eq(1)]
                m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        requested = Signal.like(in_flight)
        m.d.comb += requested.eq(in_flight + Mux(accepted, length, 0))
        m.d.sync += in_flight.eq(requested - Mux(pushed, per_word, 0))
        m.d.comb += self.busy.eq(~self.run_ready | (to_receive != 0) | fifo.r_rdy)

        # a run starts once the one before has every burst requested: its beats add to
        # those still on their way, so the requests run on from run to run
        taken = Signal()
        m.d.comb += taken.eq(self.start & self.run_ready)
        beats = times_constant(self.words, per_word, len(to_request))
        m.d.sync += to_receive.eq(to_receive - received + Mux(taken, beats, 0))
        with m.If(taken):
            m.d.sync += [address.eq(self.base), to_request.eq(beats)]
            with m.If(~self.busy):  # a new sequence of runs: its own error flag
                m.d.sync += self.error.eq(0)
        return m


__all__ = ["AxiStreamReader", "check_fifo", "least_fifo_words"]
