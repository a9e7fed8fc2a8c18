"""An AXI4 read master that reads several runs of words as one stream of requests.

Each run comes from its own address; the memory's latency is paid once for all of them.

:class:`~stepvit.rtl.axi_reader.AxiBurstReader` reads one run and runs its requests ahead
across that run's bursts; a reader started once per run pays the latency once per run.
The chunk-major stem's tile (:mod:`stepvit.rtl.stem_tiles`) is ``k²`` short runs, one per
tap, each from its own region of the weight image: one after the other, nine latencies of
40 cycles for a few words each. :class:`AxiRunsReader` issues the requests of run
``r + 1`` as soon as run ``r``'s last burst is accepted, and counts the beats back (in
order: one ID) to write each word with the run it belongs to. Same bursts, same rules,
same errors as :class:`~stepvit.rtl.axi_reader.AxiBurstReader`, which is left as it is
for its users (the core's tile buffer, the weight loader).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
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


class AxiRunsReader(BeatsPerWord, wiring.Component):
    """Read ``runs`` runs of ``words`` words, each from its own address, in one stream.

    One stream of AXI read bursts: the memory's latency is paid once for all the runs.
    The requests of run ``r + 1`` follow run ``r``'s last burst as soon as it is accepted,
    as :class:`AxiBurstReader`'s bursts of one run follow each other, without waiting for
    its data. The beats come back in order (one ID), so the data side counts them: each
    word is written with the run it belongs to (``write_run``) and its word in that run
    (``write_addr``). The bursts keep :class:`AxiBurstReader`'s rules (at most
    ``max_burst`` beats, never across a 4 KB boundary, ``arvalid`` held until accepted)
    and its errors (``error`` until the next ``start``, every requested beat still taken).

    Parameters
    ----------
    data_width, word_width, max_burst, addr_width : int
        As :class:`AxiBurstReader`'s.
    depth : int
        Words a run has at most.
    runs : int
        Runs a ``start`` reads.

    Members
    -------
    start : In(1)
        Pulse (while not ``busy``): read ``runs`` runs of ``words`` words.
    words : In(range(depth + 1))
        Every run's words (taken at the ``start``).
    base_run : Out(range(max(runs, 2)))
        The run whose first byte the reader takes from ``base`` this cycle: 0 at a
        ``start``, else the run after the one being requested (``runs`` or more once the
        last is: not taken).
    base : In(addr_width)
        Run ``base_run``'s first byte, aligned to a beat (a function of ``base_run``).
    busy : Out(1)
        A start's runs are under way (until their last beat).
    error : Out(1)
        A beat since the last ``start`` came back with an error response.
    arvalid, arready, araddr, arlen, arsize, arburst : the read address channel
    rvalid, rready, rdata, rresp, rlast : the read data channel
    write_en, write_run, write_addr, write_data : Out
        The memories' write port: word ``write_addr`` of run ``write_run``.
    """

    def __init__(self, *, runs: int, data_width: int = 64, word_width: int = 64,
                 depth: int = 1024, max_burst: int = 16, addr_width: int = 32) -> None:
        check_shape(data_width, word_width, depth, max_burst)
        if runs < 1:
            raise ValueError(f"runs must be at least 1, not {runs}")
        self._data_width, self._word_width = data_width, word_width
        self._depth, self._max_burst, self._runs = depth, max_burst, runs
        self._beat_bytes = data_width // 8
        super().__init__({
            "start": In(1),
            "words": In(range(depth + 1)),
            "base_run": Out(range(max(runs, 2))),
            "base": In(addr_width),
            "busy": Out(1),
            "error": Out(1),
            **read_channels(addr_width, data_width),
            "write_en": Out(1),
            "write_run": Out(range(max(runs, 2))),
            "write_addr": Out(range(max(depth, 2))),
            "write_data": Out(word_width),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the request side (runs and bursts ahead) and the data side (counted)."""
        m = Module()
        per_word, runs = self.beats_per_word, self._runs
        run_beats = self._depth * per_word
        to_request = Signal(range(run_beats + 1))  # beats of the run not yet requested
        to_receive = Signal(range(run_beats * runs + 1))  # beats of every run not received
        beats = Signal(range(run_beats + 1))  # a run's beats
        request_run = Signal.like(self.base_run)  # the run being requested
        address = Signal.like(self.araddr)
        starting = self.start & ~self.busy
        m.d.comb += [self.arsize.eq(self._beat_bytes.bit_length() - 1),
                     self.arburst.eq(BURST_INCR), self.araddr.eq(address),
                     self.busy.eq(to_receive != 0), self.rready.eq(to_receive != 0),
                     self.base_run.eq(Mux(starting, 0, request_run + 1))]

        # the burst: as long as allowed, left in the run, and up to the next 4 KB boundary
        length = burst_length(m, address, to_request, beat_bytes=self._beat_bytes,
                              max_burst=self._max_burst)
        m.d.comb += self.arlen.eq(length - 1)
        pending = Signal()  # a request is on the channel, waiting for arready
        m.d.comb += self.arvalid.eq(pending)
        shift = self._beat_bytes.bit_length() - 1
        with m.If(pending & self.arready):
            with m.If(to_request != length):  # the run goes on
                m.d.sync += [address.eq(address + (length << shift)),
                             to_request.eq(to_request - length)]
            with m.Elif(request_run != runs - 1):  # the run's last burst: the next run
                m.d.sync += [address.eq(self.base), to_request.eq(beats),
                             request_run.eq(request_run + 1)]
            with m.Else():  # the last run's last burst
                m.d.sync += pending.eq(0)

        # the data: beats into the word register, a word written as its last beat arrives,
        # counted word by word and run by run (the beats come back in order)
        words = Signal.like(self.words)
        word = Signal(self._word_width)
        beat = Signal(range(max(per_word, 2)))
        index = Signal.like(self.write_addr)
        data_run = Signal.like(self.write_run)
        assembled = assembled_word(m, word, self.rdata, data_width=self._data_width)
        m.d.comb += [self.write_data.eq(assembled), self.write_addr.eq(index),
                     self.write_run.eq(data_run)]
        with m.If(self.rvalid & self.rready):
            m.d.sync += [to_receive.eq(to_receive - 1), word.eq(assembled)]
            with m.If(self.rresp != 0):
                m.d.sync += self.error.eq(1)
            with m.If(beat == per_word - 1):
                m.d.comb += self.write_en.eq(1)
                m.d.sync += beat.eq(0)
                with m.If(index == words - 1):
                    m.d.sync += [index.eq(0), data_run.eq(data_run + 1)]
                with m.Else():
                    m.d.sync += index.eq(index + 1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        with m.If(starting):
            run = times_constant(self.words, per_word, len(to_request))  # no $mul
            m.d.sync += [address.eq(self.base), to_request.eq(run), beats.eq(run),
                         to_receive.eq(times_constant(self.words, per_word * runs,
                                                      len(to_receive))),
                         pending.eq(self.words != 0), request_run.eq(0), words.eq(self.words),
                         index.eq(0), beat.eq(0), data_run.eq(0), self.error.eq(0)]
        return m


__all__ = ["AxiRunsReader"]
