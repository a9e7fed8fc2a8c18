"""The residual stream in DDR: each pass reads it ahead through a FIFO and writes it behind one.

A core built with ``stream_ddr`` keeps no stream buffer (docs/ddr-dataflow.md, "Still to
build", item 2): the stream of every step lives in an *activation buffer* in DDR, word
``t * tokens * dim_chunks + token * dim_chunks + chunk`` at byte ``activations_base`` plus
that index times the word's bytes (a lane's stream value, ``lanes`` of them, padded to whole
AXI beats). This unit is what the core's pipeline sees instead of the buffer:

- **Reads ahead.** When a pass that takes the stream as its operand opens, a run
  generator walks the pass's active steps (its step mask) and, per step, either the whole
  step (a pass of every chunk: one run of ``tokens * dim_chunks`` words) or each token's
  slice (a slice of a split layer: a run of ``chunks`` words a token, from the slice's
  first chunk). An :class:`~stepvit.rtl.axi_stream.AxiStreamReader` streams the runs, back
  to back, into its FIFO: the words arrive in the order the pass closes its chunks
  (step, token, chunk), one word a closed chunk, which the sum stage takes.
- **Writes behind.** Every word the pass stores (the sum stage's residual adds, the fire
  stage's embedding spikes, the stem's tokens) goes with its index into a write FIFO; an
  :class:`~stepvit.rtl.axi_writer.AxiBurstWriter` writes each as a run of one word (the
  runs go back to back), so any order of writes is written right.
- **Credit, not stalls.** The walk is held at an event that would close a chunk while the
  read FIFO holds no word besides those promised to closings still in the pipeline
  (``read_credit``), or the write FIFO no room besides the writes promised
  (``write_credit``): the pipeline after the walk never waits, so nothing in it changes.
- **Ordering.** A pass reads each word of its steps once, before the same closing writes
  it (a residual add in place), so its reads never see its own writes; the next pass opens
  only when every write has been acknowledged (``writes_done``), so it reads what the pass
  before wrote.
- **Errors.** ``error`` is sticky until ``clear``: an AXI error response on either side,
  a take with no word (the generator's runs and the pass's closings disagree), a write
  with no room, or a pass that ends with words unread.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import (
    connect_axi,
    forward_axi_read,
    read_channels,
    times_constant,
)
from stepvit.rtl.axi_stream import AxiStreamReader, least_fifo_words
from stepvit.rtl.axi_writer import AXI_WRITE_MEMBERS, OUTSTANDING_BURSTS, AxiBurstWriter
from stepvit.rtl.core_pipeline import constants
from stepvit.rtl.core_plan import CorePlan, Operand, Sink

#: Default words of the write FIFO.
WRITE_FIFO_WORDS = 16
#: Default read latency (cycles) the read FIFO is sized to hide, with two bursts.
READ_LATENCY = 64


def stream_word_width(plan: CorePlan, data_width: int) -> int:
    """Return the bits of a stream word in DDR: ``lanes`` stream values, in whole beats."""
    bits = plan.geometry.bits["stream"] * plan.geometry.lanes
    return -(-bits // data_width) * data_width


def default_read_fifo_words(per_word: int, max_burst: int) -> int:
    """Return the read FIFO's default words, for words of ``per_word`` beats.

    Enough to hide :data:`READ_LATENCY` cycles and two bursts, never fewer than a burst and
    a word begun (:func:`~stepvit.rtl.axi_stream.check_fifo`).
    """
    return max(least_fifo_words(per_word, max_burst),
               -(-(READ_LATENCY + 2 * max_burst) // per_word))


def stream_passes(plan: CorePlan) -> list[int]:
    """Return the passes that read or write the stream, after checking the unit models them.

    A pass that takes the stream as its operand, stores to it, or fires into it must walk
    the tokens (its groups) and close every chunk once (no empty words skipped): the run
    generator and the write credit count on one word a closed chunk.

    Raises
    ------
    ValueError
        If a pass touches the stream otherwise.
    """
    tokens = plan.geometry.tokens
    touching = []
    for index, p in enumerate(plan.passes):
        if not (p.get("operand") == Operand.STREAM or p.get("sink") == Sink.STORE_STREAM
                or p.get("to_stream")):
            continue
        if p.get("groups", tokens) != tokens or p.get("skip_empty"):
            raise ValueError(f"pass {index} touches the stream but does not close each "
                             "token's chunks once: the stream cannot be kept in DDR")
        touching.append(index)
    return touching


class StreamDdr(wiring.Component):
    """The residual stream of a core kept in DDR (module docstring).

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry (steps, tokens, chunks, the stream's bits).
    data_width, max_burst : int
        The AXI beat's bits and the longest burst.
    read_fifo_words : int, optional
        Words the read FIFO holds; default: enough to hide :data:`READ_LATENCY` cycles and
        two bursts (and never fewer than a burst and a word begun).
    write_fifo_words : int
        Words the write FIFO holds.
    maps : bool
        Also write the stem's spike maps (:mod:`stepvit.rtl.stem_map_ddr`): the ``map_*``
        members, a beat each with its strobes, through the same write FIFO.

    Members
    -------
    base : In(32)
        The activation buffer's byte address (aligned to a beat).
    open : In(1)
        Pulse: a pass begins; with ``reads`` its runs are read, from ``steps``, ``first``
        and ``chunks`` (sampled now).
    reads : In(1)
        The pass takes the stream as its operand.
    steps : In(t_max)
        The pass's active steps.
    first, chunks : In
        Each token's first chunk the pass closes, and how many (a slice of a split layer;
        ``0`` and ``dim_chunks`` otherwise).
    word_valid, word_data : Out
        The next word the pass reads (its stream values), ...
    take : In(1)
        ... taken this cycle (by the sum stage, at a closed chunk).
    read_credit, write_credit : Out(1)
        A closing may be issued: the read FIFO holds a word besides those promised; the
        write FIFO has room besides the writes promised.
    promise_read, promise_write : In(1)
        A closing that reads (writes) the stream was issued this cycle.
    write_en, write_index, write_data : In
        A word to write: its index in the buffer and its stream values; promised (by
        ``promise_write``) unless ``direct``.
    direct : In(1)
        This cycle's write was not promised: the stem's tokens, which are written only
        while ``write_credit`` (and no closing is promised meanwhile).
    writes_done : Out(1)
        No write waits or is unanswered.
    reads_done : Out(1)
        No run is left to generate and no word to read or take.
    map_valid, map_ready, map_address, map_data, map_strobe
        With ``maps`` only: a beat of a spike map to write at byte ``map_address`` (a
        beat's), only the bytes ``map_strobe`` sets; taken where no stream write is.
    maps_done : Out(1)
        With ``maps`` only: every map write taken has been answered.
    close : In(1)
        Pulse: the pass is over (a word left unread is an error).
    clear : In(1)
        Pulse: forget ``error``.
    error : Out(1)
        Sticky (module docstring).
    arvalid ... rlast : the read channels; awvalid ... bresp : the write channels
    """

    def __init__(self, *, plan: CorePlan, data_width: int = 64, max_burst: int = 16,
                 read_fifo_words: int | None = None,
                 write_fifo_words: int = WRITE_FIFO_WORDS, maps: bool = False) -> None:
        stream_passes(plan)  # or refuse
        geometry = plan.geometry
        self._plan = plan
        self._value_bits = geometry.bits["stream"] * geometry.lanes
        self._word_width = stream_word_width(plan, data_width)
        self._data_width, self._max_burst = data_width, max_burst
        self.read_fifo_words = read_fifo_words or default_read_fifo_words(
            self._word_width // data_width, max_burst)
        if write_fifo_words < 1:
            raise ValueError(f"write_fifo_words must be positive, not {write_fifo_words}")
        self.write_fifo_words = write_fifo_words
        self._words = geometry.t_max * geometry.tokens * geometry.dim_chunks
        self._reader = AxiStreamReader(
            data_width=data_width, word_width=self._word_width,
            depth=geometry.tokens * geometry.dim_chunks, fifo_words=self.read_fifo_words,
            max_burst=max_burst)
        # the writer takes beats: a stream word is a run of its beats (every byte), a map
        # write one beat with its strobes
        self._maps = maps
        self._writer = AxiBurstWriter(data_width=data_width, word_width=data_width,
                                      depth=self._word_width // data_width,
                                      max_burst=max_burst, strobes=True)
        writer_members = self._writer.signature.members
        super().__init__({
            "base": In(32),
            "open": In(1),
            "reads": In(1),
            "steps": In(geometry.t_max),
            "first": In(range(max(geometry.dim_chunks, 2))),
            "chunks": In(range(geometry.dim_chunks + 1)),
            "word_valid": Out(1),
            "word_data": Out(self._value_bits),
            "take": In(1),
            "read_credit": Out(1),
            "write_credit": Out(1),
            "promise_read": In(1),
            "promise_write": In(1),
            "write_en": In(1),
            "write_index": In(range(max(self._words, 2))),
            "write_data": In(self._value_bits),
            "direct": In(1),
            "writes_done": Out(1),
            "reads_done": Out(1),
            **({"map_valid": In(1), "map_ready": Out(1), "map_address": In(32),
                "map_data": In(data_width), "map_strobe": In(data_width // 8),
                "maps_done": Out(1)} if maps else {}),
            "close": In(1),
            "clear": In(1),
            "error": Out(1),
            **read_channels(32, data_width),
            **{name: writer_members[name] for name in AXI_WRITE_MEMBERS},
        })

    @property
    def word_bytes(self) -> int:
        """Bytes of a stream word in DDR."""
        return self._word_width // 8

    @property
    def words(self) -> int:
        """Words of the activation buffer: the stream of every step."""
        return self._words

    def elaborate(self, platform: object) -> Module:
        """Build the run generator and reader, the write FIFOs and writer, and the credits."""
        m = Module()
        m.submodules.reader = reader = self._reader
        m.submodules.writer = writer = self._writer
        forward_axi_read(m, self, reader)
        connect_axi(m, writer, lambda name: getattr(self, name), AXI_WRITE_MEMBERS)
        generating = self._runs(m, reader)
        self._reads(m, reader, generating)
        self._writes(m, writer)
        return m

    def _runs(self, m: Module, reader: AxiStreamReader) -> Signal:
        """Generate the pass's runs into the reader; return whether runs are left."""
        geometry = self._plan.geometry
        t_max, tokens, dim_chunks = geometry.t_max, geometry.tokens, geometry.dim_chunks
        steps = Signal(t_max)  # active steps whose runs are not all started
        token = Signal(range(max(tokens, 2)))
        token_offset = Signal(range(max(tokens * dim_chunks, 2)))  # token * dim_chunks
        first = Signal.like(self.first)
        chunks = Signal.like(self.chunks)
        whole = Signal()  # the pass closes every chunk: one run a step
        step = Signal(range(max(t_max, 2)))
        # the lowest active step left
        for t in reversed(range(t_max)):
            with m.If(steps[t]):
                m.d.comb += step.eq(t)
        step_base = constants([t * tokens * dim_chunks for t in range(t_max)])
        index = Signal(range(max(self._words, 2)))
        m.d.comb += index.eq(step_base[step] + Mux(whole, 0, token_offset + first))
        m.d.comb += [
            reader.base.eq(self.base + times_constant(index, self.word_bytes, 32)),
            reader.words.eq(Mux(whole, tokens * dim_chunks, chunks)),
        ]
        go = Signal()
        m.d.comb += [go.eq((steps != 0) & reader.run_ready), reader.start.eq(go)]
        with m.If(go):
            with m.If(whole | (token == tokens - 1)):
                m.d.sync += [steps.bit_select(step, 1).eq(0), token.eq(0),
                             token_offset.eq(0)]
            with m.Else():
                m.d.sync += [token.eq(token + 1), token_offset.eq(token_offset + dim_chunks)]
        with m.If(self.open):
            m.d.sync += [steps.eq(Mux(self.reads, self.steps, 0)), token.eq(0),
                         token_offset.eq(0), first.eq(self.first), chunks.eq(self.chunks),
                         whole.eq(self.chunks == dim_chunks)]
        return steps != 0

    def _reads(self, m: Module, reader: AxiStreamReader, generating: Signal) -> None:
        """Hand the words on as taken; keep the read credit; flag a take with no word."""
        promised = Signal(range(self.read_fifo_words + 4))
        m.d.comb += [
            self.word_valid.eq(reader.word_valid),
            self.word_data.eq(reader.word_data[:self._value_bits]),
            reader.word_ready.eq(self.take),
            self.read_credit.eq(reader.level > promised),
            self.reads_done.eq(~generating & ~reader.busy),
        ]
        m.d.sync += promised.eq(promised + self.promise_read - (self.take & reader.word_valid))
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.If((self.take & ~reader.word_valid) | (self.close & ~self.reads_done)
                  | reader.error):
            m.d.sync += self.error.eq(1)

    def _writes(self, m: Module, writer: AxiBurstWriter) -> None:
        """Queue the writes; start a run a write, a word's beats or a map's one beat.

        The writer takes beats: a stream word is a run of its beats, every byte written;
        a spike map's write (``maps``) a run of one beat with its strobes. Map writes enter
        only where no stream write does and two entries are free besides the promised, so
        a closing promised in the same cycle still finds its room.
        """
        words, beat_bits = self.write_fifo_words, self._data_width
        per_word = self._word_width // beat_bits
        data_bits = max(self._value_bits, beat_bits)
        strobe_bits = beat_bits // 8
        address_bits = 32
        m.submodules.write_head = heads = SyncFIFO(width=address_bits + 1, depth=words)
        m.submodules.write_data = values = SyncFIFO(width=data_bits + strobe_bits + 1,
                                                    depth=words)
        promised = Signal(range(words + 4))
        stream_address = self.base + times_constant(self.write_index, self.word_bytes, 32)
        m.d.comb += [
            heads.w_data.eq(Cat(stream_address, Const(0, 1))),
            heads.w_en.eq(self.write_en),
            values.w_data.eq(Cat(self.write_data, Const(0, data_bits - self._value_bits),
                                 Const(0, strobe_bits), Const(0, 1))),
            values.w_en.eq(self.write_en),
            self.write_credit.eq(words - values.level > promised),
        ]
        if self._maps:
            room = Signal()
            m.d.comb += [room.eq(words - values.level > promised + 1),
                         self.map_ready.eq(~self.write_en & room)]
            with m.If(self.map_valid & self.map_ready):
                m.d.comb += [
                    heads.w_data.eq(Cat(self.map_address, Const(1, 1))), heads.w_en.eq(1),
                    values.w_data.eq(Cat(self.map_data, Const(0, data_bits - beat_bits),
                                         self.map_strobe, Const(1, 1))),
                    values.w_en.eq(1),
                ]
        # the address side: a run a head
        head_map = heads.r_data[address_bits]
        m.d.comb += [
            writer.base.eq(heads.r_data[:address_bits]),
            writer.words.eq(Mux(head_map, 1, per_word)),
            writer.start.eq(heads.r_rdy),
            heads.r_en.eq(writer.run_ready),
        ]
        # the data side: the head word's beats, one a take
        beat = Signal(range(max(per_word, 2)))
        value = values.r_data[:data_bits]
        is_map = values.r_data[-1]
        last = Signal()
        m.d.comb += [
            last.eq(is_map | (beat == per_word - 1)),
            writer.word_valid.eq(values.r_rdy),
            writer.word_data.eq(value.word_select(beat, beat_bits) if per_word > 1
                                else value[:beat_bits]),
            writer.word_strobe.eq(Mux(is_map, values.r_data[data_bits:data_bits + strobe_bits],
                                      Const(-1, strobe_bits))),
            values.r_en.eq(writer.word_ready & last),
        ]
        with m.If(writer.word_valid & writer.word_ready):
            m.d.sync += beat.eq(Mux(last, 0, beat + 1))
        m.d.comb += self.writes_done.eq(~self.write_en & ~heads.r_rdy & ~values.r_rdy
                                        & ~writer.busy)
        m.d.sync += promised.eq(promised + self.promise_write - (self.write_en & ~self.direct))
        with m.If((self.write_en & ~values.w_rdy) | writer.error):
            m.d.sync += self.error.eq(1)
        if self._maps:
            self._map_answers(m, head_map, heads.r_rdy & writer.run_ready)

    def _map_answers(self, m: Module, head_map: Value, started: Value) -> None:
        """Count the map writes not yet answered (``maps_done``): a burst each, in order.

        Each burst requested is marked as a map's or the stream's (its run's) in a queue
        the responses take in order.
        """
        # (a run starts with at most OUTSTANDING_BURSTS unanswered, and adds at most two)
        m.submodules.owners = owners = SyncFIFO(width=1, depth=OUTSTANDING_BURSTS + 2)
        run_map = Signal()
        with m.If(started):
            m.d.sync += run_map.eq(head_map)
        outstanding = Signal(range(OUTSTANDING_BURSTS + self.write_fifo_words + 2))
        answered = Signal()
        m.d.comb += [
            owners.w_data.eq(run_map),  # a run's bursts are requested after its start
            owners.w_en.eq(self.awvalid & self.awready),
            owners.r_en.eq(self.bvalid & self.bready),
            answered.eq(self.bvalid & self.bready & owners.r_rdy & owners.r_data),
            self.maps_done.eq(outstanding == 0),
        ]
        m.d.sync += outstanding.eq(outstanding + (self.map_valid & self.map_ready) - answered)


__all__ = ["READ_LATENCY", "StreamDdr", "WRITE_FIFO_WORDS", "default_read_fifo_words",
           "stream_passes", "stream_word_width"]
