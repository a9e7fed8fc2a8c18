"""An AXI4 write master that writes a run of words, taken from a stream, into DDR.

The write side of the weights-from-DDR design's memory port (docs/ddr-dataflow.md, "Still
to build", item 2: the activations through DDR): a run of words, offered one at a time on
a valid/ready stream (a FIFO's read side), goes to a byte address over the AXI write
channels (``aw*``, ``w*``, ``b*``). Built alone and tested against a DDR model with
latency and backpressure (tests/rtl/test_axi_writer.py) and against the cocotb memory of
``sim/axi_memory.py`` (tests/sim/test_axi_writer_verilog.py); the residual stream's writes
in a design that keeps it in DDR (:mod:`stepvit.rtl.stream_ddr`).

- **Bursts**: INCR bursts of at most ``max_burst`` beats, never across a 4 KB boundary,
  the same bursts :class:`~stepvit.rtl.axi_reader.AxiBurstReader` reads a run in.
- **Addresses run ahead**: every burst's address is offered as soon as the previous one
  is accepted, without waiting for its data (a slave may take the data after its
  address, or before); the write data side walks the same bursts from its own counters,
  so ``wlast`` marks each burst's last beat.
- **Words**: ``word_width`` bits, a whole number of beats, the low beat first
  (little-endian, as the reader assembles them); every byte is written (``wstrb`` all
  ones), or with ``strobes`` the bytes its ``word_strobe`` sets (a spike map's chunk of a
  position in DDR: docs/ddr-dataflow.md). A word is taken from the stream as its first
  beat goes out, so a word stream that keeps up gives a beat a cycle.
- **Done means acknowledged**: ``busy`` stays high until every burst's write response has
  come back, so whatever reads the run next reads what was written.
- **Runs back to back**: the next run may start as soon as every burst of the one before
  is requested (``run_ready``); the words of the runs follow each other on the stream, so
  a pass that writes a slice of each token's words writes at the bus's pace.
- **Errors**: a response that is not OKAY sets ``error`` until a ``start`` finds the
  writer idle; the run still completes, so the bus is left clean.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import (
    BURST_INCR,
    BeatsPerWord,
    burst_length,
    check_shape,
    request_bursts,
    times_constant,
)

#: Runs the address side may be ahead of the data side.
RUN_QUEUE = 4
#: Bursts requested and not yet answered beyond which no run starts (the count's range).
OUTSTANDING_BURSTS = 512

#: The AXI write channels' members of a writer, by their AXI names.
AXI_WRITE_MEMBERS = ("awvalid", "awready", "awaddr", "awlen", "awsize", "awburst",
                     "wvalid", "wready", "wdata", "wstrb", "wlast",
                     "bvalid", "bready", "bresp")


class AxiBurstWriter(BeatsPerWord, wiring.Component):
    """Write runs of words from a stream, each ``words`` to byte address ``base``.

    Parameters
    ----------
    data_width : int
        Bits of an AXI beat (64 for a Zynq-7000 HP port, 128 for a Zynq UltraScale+ one).
    word_width : int
        Bits of a stream word: a whole number of beats.
    depth : int
        Words a run has at most.
    max_burst : int
        Beats a burst may have (16 for AXI3, up to 256 for AXI4).
    addr_width : int
        Bits of a byte address.
    strobes : bool
        Each word comes with its byte strobes (``word_strobe``, a bit a byte, the low beat's
        first); default ``False``: every byte is written.

    Members
    -------
    start : In(1)
        Pulse (while ``run_ready``): write the next ``words`` words of the stream to
        ``base``, after the runs started before it.
    run_ready : Out(1)
        A ``start`` is taken: every burst of the runs before it has been requested (the
        address side runs at most :data:`RUN_QUEUE` runs ahead of the data, and at most
        :data:`OUTSTANDING_BURSTS` bursts ahead of the responses).
    base : In(addr_width)
        The run's first byte, aligned to a beat.
    words : In(range(depth + 1))
        The run's words.
    busy : Out(1)
        A run is under way: until the last run's last write response.
    error : Out(1)
        A write response since the ``start`` that found the writer idle was not OKAY.
    word_valid, word_ready, word_data : the stream of the run's words, in order
    word_strobe : In(word_width // 8)
        With ``strobes`` only: the bytes of ``word_data`` to write.
    awvalid, awready, awaddr, awlen, awsize, awburst : the write address channel
    wvalid, wready, wdata, wstrb, wlast : the write data channel
    bvalid, bready, bresp : the write response channel
    """

    def __init__(self, *, data_width: int = 64, word_width: int = 64, depth: int = 1024,
                 max_burst: int = 16, addr_width: int = 32, strobes: bool = False) -> None:
        check_shape(data_width, word_width, depth, max_burst)
        self._data_width, self._word_width = data_width, word_width
        self._strobes = strobes
        self._depth, self._max_burst = depth, max_burst
        self._beat_bytes = data_width // 8
        super().__init__({
            "start": In(1),
            "run_ready": Out(1),
            "base": In(addr_width),
            "words": In(range(depth + 1)),
            "busy": Out(1),
            "error": Out(1),
            "word_valid": In(1),
            "word_ready": Out(1),
            "word_data": In(word_width),
            **({"word_strobe": In(word_width // 8)} if strobes else {}),
            "awvalid": Out(1),
            "awready": In(1),
            "awaddr": Out(addr_width),
            "awlen": Out(8),
            "awsize": Out(3),
            "awburst": Out(2),
            "wvalid": Out(1),
            "wready": In(1),
            "wdata": Out(data_width),
            "wstrb": Out(data_width // 8),
            "wlast": Out(1),
            "bvalid": In(1),
            "bready": Out(1),
            "bresp": In(2),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the address side (bursts ahead), the data side and the responses' count."""
        m = Module()
        per_word = self.beats_per_word
        total = self._depth * per_word
        shift = self._beat_bytes.bit_length() - 1
        m.d.comb += [self.awsize.eq(shift), self.awburst.eq(BURST_INCR)]

        # the address side: the reader's request side, on the write address channel; a
        # run starts once every burst of the one before is requested, and its base and
        # beats go to the data side through a queue
        to_request = Signal(range(total + 1))  # beats whose burst is not yet requested
        address = Signal.like(self.awaddr)
        pending = Signal()  # a burst's address is on the channel, waiting for awready
        length, accepted = request_bursts(m, address, to_request, pending, self.awready,
                                          beat_bytes=self._beat_bytes,
                                          max_burst=self._max_burst)
        m.d.comb += [self.awaddr.eq(address), self.awlen.eq(length - 1),
                     self.awvalid.eq(pending)]
        m.submodules.runs = runs = SyncFIFO(width=len(self.base) + len(to_request),
                                            depth=RUN_QUEUE)
        bursts_out = Signal(range(OUTSTANDING_BURSTS + total + 1))  # requested, unanswered
        m.d.comb += self.run_ready.eq(~pending & (to_request == 0) & runs.w_rdy
                                      & (bursts_out <= OUTSTANDING_BURSTS))

        # the data side: the same bursts from its own address, so wlast falls where the
        # address side cut them; a word is held in a register and sent a beat at a time
        to_send = Signal(range(total + 1))  # beats of the data side's run not yet sent
        to_take = Signal(range(self._depth * (RUN_QUEUE + 1) + 1))  # words not yet taken
        w_address = Signal.like(self.awaddr)
        in_burst = Signal(range(self._max_burst + 1))  # beats left in this burst (0: new)
        w_length = burst_length(m, w_address, to_send, beat_bytes=self._beat_bytes,
                                max_burst=self._max_burst)
        left = Signal.like(in_burst)
        m.d.comb += left.eq(Mux(in_burst == 0, w_length, in_burst))

        word = Signal(self._word_width)
        held = Signal()  # word holds beats not yet sent
        beat = Signal(range(max(per_word, 2)))
        m.d.comb += [self.wvalid.eq(held & (to_send != 0)),
                     self.wdata.eq(word[:self._data_width]), self.wlast.eq(left == 1)]
        if self._strobes:
            strobe = Signal(self._word_width // 8)  # the held word's strobes, beat by beat
            m.d.comb += self.wstrb.eq(strobe[:self._beat_bytes])
        else:
            m.d.comb += self.wstrb.eq(Const(-1, len(self.wstrb)))
        sent = Signal()
        m.d.comb += sent.eq(self.wvalid & self.wready)
        last_beat = Signal()
        m.d.comb += last_beat.eq(beat == per_word - 1)
        # a new word comes in when none is held, or as the held word's last beat goes out
        m.d.comb += self.word_ready.eq((to_take != 0) & (~held | (sent & last_beat)))
        with m.If(sent):
            m.d.sync += [to_send.eq(to_send - 1), in_burst.eq(left - 1),
                         w_address.eq(w_address + self._beat_bytes)]
            if per_word > 1:
                m.d.sync += word.eq(word >> self._data_width)
                if self._strobes:
                    m.d.sync += strobe.eq(strobe >> self._beat_bytes)
            with m.If(last_beat):
                m.d.sync += [beat.eq(0), held.eq(0)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        with m.If(self.word_valid & self.word_ready):
            m.d.sync += [word.eq(self.word_data), held.eq(1)]
            if self._strobes:
                m.d.sync += strobe.eq(self.word_strobe)
        # the data side's next run, once its run's last beat is out
        run_done = Signal()
        m.d.comb += [run_done.eq((to_send == 0) | (sent & (to_send == 1))),
                     runs.r_en.eq(run_done)]
        with m.If(run_done & runs.r_rdy):
            m.d.sync += [w_address.eq(runs.r_data[:len(self.base)]),
                         to_send.eq(runs.r_data[len(self.base):]), in_burst.eq(0)]

        # the responses: one a burst; busy until the last burst's has come back
        responded = Signal()
        m.d.comb += [self.bready.eq(bursts_out != 0),
                     responded.eq(self.bvalid & self.bready)]
        with m.If(accepted & ~responded):
            m.d.sync += bursts_out.eq(bursts_out + 1)
        with m.Elif(responded & ~accepted):
            m.d.sync += bursts_out.eq(bursts_out - 1)
        with m.If(responded & (self.bresp != 0)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(~self.run_ready | (to_send != 0) | runs.r_rdy
                                 | (bursts_out != 0) | (to_take != 0))

        taken = Signal()
        m.d.comb += taken.eq(self.start & self.run_ready)
        beats = times_constant(self.words, per_word, len(to_request))
        m.d.sync += to_take.eq(to_take - (self.word_valid & self.word_ready)
                               + Mux(taken, self.words, 0))
        m.d.comb += [runs.w_data.eq(Cat(self.base, beats)),
                     runs.w_en.eq(taken & (self.words != 0))]
        with m.If(taken):
            m.d.sync += [address.eq(self.base), to_request.eq(beats),
                         pending.eq(self.words != 0)]
            with m.If(~self.busy):  # a new sequence of runs: its own error flag
                m.d.sync += self.error.eq(0)
        return m


__all__ = ["AXI_WRITE_MEMBERS", "AxiBurstWriter", "OUTSTANDING_BURSTS", "RUN_QUEUE"]
