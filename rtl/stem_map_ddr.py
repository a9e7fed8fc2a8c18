"""The stem's spike maps in DDR: each module's fires write its map behind, its reader reads ahead.

A chunk-major stem engine (:class:`~stepvit.rtl.stem_engine.StemEngine`) built with
``maps_ddr`` keeps no emitted map on chip (docs/ddr-dataflow.md, "The stem's maps in DDR"):
each module's map of every step is in the activation buffer, after the residual stream, in
the layout :func:`map_layout` gives: position-major, so the next module's scatter reads a
step's words in the order it walks them, one run a pass, and each chunk of a position in
whole bytes of its own (:attr:`StemMapLayout.chunk_bytes`), so a chunk-major fire, which
emits one chunk's lanes of every position, writes them with a byte strobe and no
read-modify-write.

- **Writes behind, never in a fire's way.** A fire (or an OR-pool) pass of a module pushes
  its pass's (module, step, chunk) into a queue as it starts, and the chunk's spikes of each
  position, in position order, into a staging FIFO of twice the most positions a pass
  writes; a pass starts only while the FIFO has room for a whole pass (:attr:`write_room`),
  so the fire never waits once it runs. The drain takes them in order and hands each on as
  one AXI beat at its position's address, the chunk's bytes strobed
  (:class:`~stepvit.rtl.stream_ddr.StreamDdr`'s ``map_*``, which writes it).
- **Reads ahead.** A scatter of a module whose input is a map opens one run: the source
  map's words of the pass's step, in position order. A tokens pass opens two runs a token,
  the last stage's word and the RPE's. An
  :class:`~stepvit.rtl.axi_stream.AxiStreamReader` streams them into its FIFO; the word
  assembler hands on a whole (padded) word at a time (``word_*``).
- **Order.** The engine starts a scatter only when every write of its source map has been
  answered, and a tokens pass only when every map write has (:attr:`written_module`,
  ``answered``): AXI orders no read after a write before its response.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import forward_axi_read, read_channels
from stepvit.rtl.axi_stream import AxiStreamReader, least_fifo_words
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.tables import table

#: Passes the write queue holds (each a pass's module, step and chunk).
HEADER_WORDS = 4
#: Read latency (cycles) the read FIFO is sized to hide, with two bursts: 64 beats in all
#: at bursts of 16, a FIFO distributed RAM holds in one row of cells (the PYNQ-Z2's latency
#: is 40 cycles).
READ_LATENCY = 32


def read_fifo_beats(max_burst: int) -> int:
    """Return the beats of the maps' read FIFO: the latency and two bursts."""
    return max(least_fifo_words(1, max_burst), READ_LATENCY + 2 * max_burst)


def staged_depth(plan: StemPlan) -> int:
    """Return the words of the staging FIFO: two passes of the most positions."""
    return 2 * max(int(np.prod(stage.out_shape[1:])) for stage in plan.stages)


@dataclass(frozen=True)
class StemMapLayout:
    """Where each stem module's emitted map of every step lies in the maps region.

    Attributes
    ----------
    beat_bytes : int
        Bytes of an AXI beat.
    chunk_bytes : int
        Bytes of one chunk of a position: the least power of two that holds its lanes'
        bits (a chunk is written alone, with its strobes).
    word_beats : tuple of int
        Per module, beats of one position's word (its chunks' bytes, in whole beats).
    positions : tuple of int
        Per module, positions of one step of its emitted map.
    bases : tuple of int
        Per module, the byte offset of its map (step 0) from the region's start.
    t_max : int
        Steps of every map.
    total_bytes : int
        Bytes of the whole region.
    """

    beat_bytes: int
    chunk_bytes: int
    word_beats: tuple[int, ...]
    positions: tuple[int, ...]
    bases: tuple[int, ...]
    t_max: int
    total_bytes: int

    def word_bytes(self, module: int) -> int:
        """Return the bytes of one position's word of ``module``'s map."""
        return self.word_beats[module] * self.beat_bytes

    def step_bytes(self, module: int) -> int:
        """Return the bytes of one step of ``module``'s map."""
        return self.positions[module] * self.word_bytes(module)

    def address(self, module: int, step: int, position: int, chunk: int) -> int:
        """Return the byte offset of a chunk of a position of ``module``'s map at ``step``."""
        return (self.bases[module] + step * self.step_bytes(module)
                + position * self.word_bytes(module) + chunk * self.chunk_bytes)

    def step_bases(self) -> list[int]:
        """Return each map's step's first byte, module ``i``'s step ``t`` at ``i·T + t``."""
        return [self.address(module, step, 0, 0) for module in range(len(self.bases))
                for step in range(self.t_max)]


def map_layout(plan: StemPlan, data_width: int) -> StemMapLayout:
    """Return the DDR layout of ``plan``'s emitted maps for beats of ``data_width`` bits.

    Raises
    ------
    ValueError
        If the plan is not chunk-major, or a chunk's lanes are wider than a beat.
    """
    if not plan.chunk_major:
        raise ValueError("the stem's maps go to DDR only from a chunk-major stem "
                         "(--stem-chunk-major)")
    beat_bytes = data_width // 8
    chunk_bytes = 1
    while chunk_bytes * 8 < plan.lanes:
        chunk_bytes *= 2
    if chunk_bytes > beat_bytes:
        raise ValueError(f"the stem's {plan.lanes} lanes are wider than a {data_width}-bit "
                         "beat: its maps cannot be written a chunk at a time")
    word_beats, positions, bases, offset = [], [], [], 0
    for index, stage in enumerate(plan.stages):
        beats = -(-plan.chunks(index) * chunk_bytes // beat_bytes)
        count = int(np.prod(stage.out_shape[1:]))
        word_beats.append(beats)
        positions.append(count)
        bases.append(offset)
        offset += plan.t_max * count * beats * beat_bytes
    return StemMapLayout(beat_bytes=beat_bytes, chunk_bytes=chunk_bytes,
                         word_beats=tuple(word_beats), positions=tuple(positions),
                         bases=tuple(bases), t_max=plan.t_max, total_bytes=offset)


def dense_word(word, layout: StemMapLayout, plan: StemPlan, module: int):
    """Return a padded word of ``module``'s map as the on-chip map's word (chunks' lanes)."""
    lanes, bits = plan.lanes, 8 * layout.chunk_bytes
    return Cat(*(word[chunk * bits:chunk * bits + lanes] for chunk in range(plan.chunks(module))))


class StemMapDdr(wiring.Component):
    """The stem's emitted maps kept in DDR (module docstring).

    Parameters
    ----------
    plan : StemPlan
        The chunk-major stem.
    data_width, max_burst : int
        The AXI beat's bits and the longest burst.

    Members
    -------
    base : In(32)
        The maps region's byte address (aligned to a beat).
    open_write : In(1)
        Pulse: a fire or pool pass of ``write_module`` at ``write_step`` for
        ``write_chunk`` begins (only while ``write_room``).
    write_room : Out(1)
        The staging FIFO has room for a whole pass, and the queue for its header.
    spike_valid, spike_data : In
        The running pass's chunk of the next position (in position order).
    written_module : Out
        The module whose writes were queued last; ``pending``: some of them may not be
        answered yet.
    answered : In(1)
        Every map write handed on has been answered (``StreamDdr.maps_done``).
    map_valid ... map_strobe : the beats to write (``StreamDdr``'s ``map_*``)
    open_read : In(1)
        Pulse: read ``read_module``'s words of ``read_step`` (a scatter's source), or with
        ``read_tokens`` the last stage's and the RPE's words of every position, alternately.
    word_valid, word_data, word_take : the words read, padded (:func:`dense_word`)
    reads_done : Out(1)
        No run is left to generate and no word to take.
    clear : In(1)
        Pulse: forget ``error``.
    error : Out(1)
        An error response on the reads (sticky until ``clear``), or a take with no word.
    arvalid ... rlast : the read channels
    """

    def __init__(self, plan: StemPlan, *, data_width: int = 64, max_burst: int = 16) -> None:
        self._plan = plan
        self.layout = layout = map_layout(plan, data_width)
        self._data_width, self._max_burst = data_width, max_burst
        modules = len(plan.stages)
        self._max_positions = max(layout.positions)
        self._max_beats = max(layout.word_beats)
        if plan.has_rpe and (layout.word_beats[plan.last_stage] != layout.word_beats[-1]
                             or layout.positions[plan.last_stage] != layout.positions[-1]):
            raise ValueError("the last stage's map and the RPE's must have the same words")
        self._reader = AxiStreamReader(
            data_width=data_width, word_width=data_width,
            depth=max(p * b for p, b in zip(layout.positions, layout.word_beats)),
            fifo_words=read_fifo_beats(max_burst),
            max_burst=max_burst)
        super().__init__({
            "base": In(32),
            "open_write": In(1),
            "write_module": In(range(max(modules, 2))),
            "write_step": In(range(max(plan.t_max, 2))),
            "write_chunk": In(range(max(max(plan.chunks(i) for i in range(modules)), 2))),
            "write_room": Out(1),
            "spike_valid": In(1),
            "spike_data": In(plan.lanes),
            "written_module": Out(range(max(modules, 2))),
            "pending": Out(1),
            "answered": In(1),
            "map_valid": Out(1),
            "map_ready": In(1),
            "map_address": Out(32),
            "map_data": Out(data_width),
            "map_strobe": Out(data_width // 8),
            "open_read": In(1),
            "read_module": In(range(max(modules, 2))),
            "read_step": In(range(max(plan.t_max, 2))),
            "read_tokens": In(1),
            "word_valid": Out(1),
            "word_data": Out(self._max_beats * data_width),
            "word_take": In(1),
            "reads_done": Out(1),
            "clear": In(1),
            "error": Out(1),
            **read_channels(32, data_width),
        })

    def _module_table(self, m: Module, values: list[int], module, step=None, *, name: str):
        """Return ``values[module]`` (or ``values[module * T + step]``) from a table."""
        plan = self._plan
        if step is None:
            return table(m, values, module, name=name)
        step_bits = max(plan.t_max - 1, 1).bit_length()
        rows = [0] * (len(plan.stages) << step_bits)
        for index in range(len(plan.stages)):
            for t in range(plan.t_max):
                rows[index << step_bits | t] = values[index * plan.t_max + t]
        return table(m, rows, Cat(step[:step_bits], module), name=name)

    def elaborate(self, platform: object) -> Module:
        """Build the staging FIFO and its drain, and the reader, its runs and assembler."""
        m = Module()
        self._writes(m)
        self._reads(m)
        return m

    def _writes(self, m: Module) -> None:
        """Stage the passes' spikes; drain them as strobed beats at their addresses."""
        plan, layout = self._plan, self.layout
        modules, beat_bytes = len(plan.stages), layout.beat_bytes
        depth = staged_depth(plan)
        m.submodules.staged = staged = SyncFIFOBuffered(width=plan.lanes, depth=depth)
        header_layout = (len(self.write_module), len(self.write_step), len(self.write_chunk))
        m.submodules.headers = headers = SyncFIFO(width=sum(header_layout), depth=HEADER_WORDS)
        self._staged, self._headers = staged, headers  # (for probes in simulation)
        m.d.comb += [
            self.write_room.eq((staged.level <= depth - self._max_positions) & headers.w_rdy),
            staged.w_en.eq(self.spike_valid), staged.w_data.eq(self.spike_data),
            headers.w_en.eq(self.open_write),
            headers.w_data.eq(Cat(self.write_module, self.write_step, self.write_chunk)),
        ]
        with m.If(self.open_write):
            m.d.sync += [self.written_module.eq(self.write_module), self.pending.eq(1)]
        # the drain: a header's positions, each one beat at its address
        module_bits, step_bits, _ = header_layout
        module = headers.r_data[:module_bits]
        step = headers.r_data[module_bits:module_bits + step_bits]
        chunk = headers.r_data[module_bits + step_bits:]
        first = self._module_table(m, layout.step_bases(), module, step, name="map_step_base")
        stride = self._module_table(m, [layout.word_bytes(i) for i in range(modules)],
                                    module, name="map_word_bytes")
        count = self._module_table(m, [layout.positions[i] for i in range(modules)],
                                   module, name="map_positions")
        offset = Signal(32)  # from the region's start: the position's chunk
        position = Signal(range(self._max_positions + 1))
        draining = Signal()
        shift = (beat_bytes - 1).bit_length()
        chunk_shift = (layout.chunk_bytes - 1).bit_length()
        with m.If(~draining & headers.r_rdy):
            m.d.sync += [draining.eq(1), position.eq(0),
                         offset.eq(first + (chunk << chunk_shift))]
        address = Signal(32)
        m.d.comb += address.eq(self.base + offset)
        within = address[:shift] if shift else Const(0, 1)
        chunk_mask = (1 << layout.chunk_bytes) - 1
        m.d.comb += [
            self.map_valid.eq(draining & staged.r_rdy),
            self.map_address.eq(Cat(Const(0, shift), address[shift:])),
            self.map_strobe.eq(Const(chunk_mask, beat_bytes) << within),
            # the chunk's bits in every chunk's bytes of the beat: the strobe picks one
            self.map_data.eq(Cat(staged.r_data,
                                 Const(0, 8 * layout.chunk_bytes - plan.lanes))
                             .replicate(beat_bytes // layout.chunk_bytes)),
            staged.r_en.eq(draining & self.map_ready),
        ]
        with m.If(self.map_valid & self.map_ready):
            m.d.sync += [offset.eq(offset + stride), position.eq(position + 1)]
            with m.If(position == count - 1):
                m.d.comb += headers.r_en.eq(1)
                m.d.sync += draining.eq(0)
        with m.If(self.answered & ~draining & ~headers.r_rdy & ~staged.r_rdy
                  & ~self.open_write & ~self.spike_valid):
            m.d.sync += self.pending.eq(0)

    def _reads(self, m: Module) -> None:
        """Generate the runs, stream their beats, and assemble whole words."""
        plan, layout = self._plan, self.layout
        modules = len(plan.stages)
        m.submodules.reader = reader = self._reader
        forward_axi_read(m, self, reader)
        # the runs: one of a step's words (a scatter), or a word of each of the last stage
        # and the RPE a position (the tokens)
        left = Signal(range(self._max_positions * 2 + 1))  # runs left to start
        tokens = Signal()
        module = Signal.like(self.read_module)
        step = Signal.like(self.read_step)
        position_bytes = Signal(32)  # tokens: the position's word from its map's step base
        second = Signal()  # tokens: the RPE's word of the position is next
        last, rpe = plan.last_stage, (len(plan.stages) - 1 if plan.has_rpe else None)
        step_base = self._module_table(
            m, layout.step_bases(),
            Mux(tokens & second, rpe if rpe is not None else last, module), step,
            name="map_read_base")
        whole = self._module_table(m, [layout.positions[i] * layout.word_beats[i]
                                       for i in range(modules)], module, name="map_read_beats")
        token_beats = layout.word_beats[last]
        m.d.comb += [
            reader.base.eq(self.base + step_base + Mux(tokens, position_bytes, 0)),
            reader.words.eq(Mux(tokens, token_beats, whole)),
        ]
        go = Signal()
        m.d.comb += [go.eq((left != 0) & reader.run_ready), reader.start.eq(go)]
        # tokens: the next position after its RPE word (or its only word, without the RPE)
        position_done = second if rpe is not None else Const(1)
        with m.If(go):
            m.d.sync += left.eq(left - 1)
            with m.If(tokens):
                if rpe is not None:
                    m.d.sync += second.eq(~second)
                with m.If(position_done):
                    m.d.sync += position_bytes.eq(position_bytes + layout.word_bytes(last))
        words_per_token = 2 if rpe is not None else 1
        beats = Signal(range(self._max_beats + 1))  # the beats of the pass's words
        word_beats = self._module_table(m, list(layout.word_beats), self.read_module,
                                        name="map_word_beats")
        with m.If(self.open_read):
            m.d.sync += [
                tokens.eq(self.read_tokens),
                module.eq(Mux(self.read_tokens, last, self.read_module)),
                step.eq(self.read_step), position_bytes.eq(0), second.eq(0),
                left.eq(Mux(self.read_tokens, layout.positions[last] * words_per_token, 1)),
                beats.eq(Mux(self.read_tokens, token_beats, word_beats)),
            ]
        # the assembler: a word's beats into a register, handed on whole
        word = Signal(self._max_beats * self._data_width)
        have = Signal(range(self._max_beats + 1))
        full = Signal()
        m.d.comb += [full.eq((have == beats) & (beats != 0)),
                     reader.word_ready.eq(~full),
                     self.word_valid.eq(full), self.word_data.eq(word)]
        with m.If(reader.word_valid & ~full):
            m.d.sync += [word.word_select(have, self._data_width).eq(reader.word_data),
                         have.eq(have + 1)]
        with m.If(self.word_take & full):
            m.d.sync += have.eq(0)
        m.d.comb += self.reads_done.eq((left == 0) & ~reader.busy & (have == 0))
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.If((self.word_take & ~full) | reader.error):
            m.d.sync += self.error.eq(1)


__all__ = ["READ_LATENCY", "StemMapDdr", "StemMapLayout", "dense_word", "map_layout",
           "read_fifo_beats", "staged_depth"]
