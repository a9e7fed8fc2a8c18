"""One stem module in hardware: its membranes, spike maps and pass loops.

The engine (:mod:`stepvit.rtl.stem_engine`) holds one unit per stem module and says which
pass runs (``go_*``, held for the whole pass); the unit answers ``done`` in the pass's last
cycle. The conv banks (:class:`~stepvit.rtl.stem_conv.StemConvBanks`) and the LIF lanes are
the engine's, one set for every module: a unit drives their inputs from its loops and the
engine passes on those of the module whose pass runs. What persists is the unit's own: its
membranes across steps, its spike maps (and for stage 0 its kept current). Each pass begins
with one cycle in ``IDLE`` (its first read), as
:meth:`~stepvit.rtl.stem_plan.StemPlan.pass_cycles` counts:

- *clear*: every bank's address ``a`` zeroed at cycle ``a``;
- *scatter*: the input map's words walked in order, the next word read while this one walks,
  so a word costs its set bits times the chunks (one cycle when it has none); stage 0's
  words are its pixels' bits of the pass's bit plane (``plane``);
- *double* (stage 0): every bank's address ``a`` doubled at cycle ``a`` (written a cycle
  later), between two of its plane scatters;
- *fire*: per LIF position and chunk, the pool window's maximum (one read of every bank,
  its words registered, then a registered tree of compares) plus the bias into the LIFs,
  whose spikes are written into the LIF map three cycles after the read. Stage 0's first
  fire of the image also writes the maxima into its kept current, which its later fires
  read (a cycle early, registered) in place of the banks;
- *pool* (a stage that pools after its LIF): each window's spike words read one a cycle and
  ORed into the emitted map.

In a chunk-major plan (:class:`~stepvit.rtl.stem_plan.StemPlan`) each pass handles the one
chunk ``chunk`` says at step ``map_step``: the clear zeroes one chunk's words, the scatter
makes one event per input bit, the fire reads and writes one chunk's membranes (one word a
LIF position, kept across the chunk's steps) and writes that chunk's lanes of the emitted
map at its step. The emitted map holds every step (``T`` times one step's positions, step
``t`` from ``t·positions``), read at ``map_step``; a stage that pools after its LIF keeps
one chunk's LIF map of one step, ``lanes`` bits wide, which its pool ORs into that chunk's
lanes of the emitted map. Stage 0 keeps no current of its own: its chunk's current stays
in the banks, which no other module uses between that chunk's fires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from stepvit.model.export.stem import conv_out
from stepvit.rtl.ram_style import ram_attrs
from stepvit.rtl.spike_walker import SpikeWalker
from stepvit.rtl.stem_plan import PLANES, StemPlan
from stepvit.rtl.tables import row_table, table


class StemModuleUnit(wiring.Component):
    """Stem module ``index`` of ``plan``: its state and the loops of its passes.

    Parameters
    ----------
    plan : StemPlan
        The stem.
    index : int
        The module (stage 0 walks pixel bit planes and keeps its current; the others walk
        spikes).
    bias, threshold : numpy.ndarray or None
        ``[Cout]`` and ``[Cout]`` (the export's), constant tables of the unit; ``None``
        (a ``weights="ddr"`` design): the engine reads them from RAMs the weight loader
        fills, at the chunk the unit gives in ``lif_chunk``.
    current_bits, membrane_bits : int
        Signed widths of its currents and membranes (the export's proven widths).
    sum_bits : int
        Signed width of the shared banks' currents and of ``lif_bias``.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed in UltraRAM or LUTs, by its names (the stem's
        with ``stem.`` before), and their ``ram_style`` (:mod:`stepvit.rtl.ram_style`).
        Default: none.
    rewrite_map : bool, optional
        Chunk-major only: write the emitted map whole words, the word read a cycle before
        and written back with the pass's chunk replaced, rather than with a write enable a
        chunk. Default: where block RAM takes whole words in fewer blocks
        (:func:`~stepvit.rtl.stem_sizing.rewrites_out_map`).
    maps_ddr : bool, optional
        Chunk-major only: keep no emitted map; its fire (or pool) hands each position's
        chunk of spikes out, in position order (``map_write_*``), to the engine's
        :class:`~stepvit.rtl.stem_map_ddr.StemMapDdr`, and its scatter (past stage 0) takes
        its input words from there as they arrive (``in_valid``, ``in_take``). Default
        ``False``.

    Members
    -------
    go_clear, go_scatter, go_fire, go_pool : In(1)
        The pass that runs now (at most one, held until ``done``).
    go_double, plane : In
        Stage 0 only: a double pass runs now; the bit plane its scatter walks.
    fresh : In(1)
        Its membranes read as 0 (its first active step of the image).
    done : Out(1)
        The last cycle of the pass.
    in_address : Out, in_data : In
        The input map's read port (one word a position: ``8·C`` pixel bits, or ``Cin``
        spikes), data a cycle after the address.
    map_address : In, map_data : Out
        The read port of the spikes it emits (``chunks·lanes`` bits a position); not with
        ``maps_ddr``.
    map_write_valid, map_write_spikes : Out
        With ``maps_ddr``: the pass's chunk of the next position of its emitted map.
    in_valid : In(1), in_take : Out(1), in_wait : Out(1)
        With ``maps_ddr``, past stage 0: ``in_data`` holds the next input word; the scatter
        takes it (its address is not used); the scatter waits for it this cycle.
    fired_valid : Out(1), fired : Out
        The spikes of one LIF chunk, to count.
    event_*, window_valid, window_y, window_x, window_chunk, clear_* : Out
        Its drive of the shared conv banks' inputs of the same names (and stage 0's
        ``double_valid``).
    window_done : In(1)
        The shared banks' window result is valid (any module's: a unit takes it only in
        its own pass).
    lif_membrane, lif_threshold, lif_bias : Out
        The shared LIFs' inputs for the chunk whose window result arrives now (the current
        is the window's maximum, or stage 0's ``kept``, plus ``lif_bias``).
    lif_spikes, lif_next_membrane : In
        The shared LIFs' outputs.
    lif_chunk : Out
        Without tables only (``bias=None``): the chunk whose window result arrives now, in
        place of ``lif_bias`` and ``lif_threshold``.
    window_max : In, kept : Out
        Stage 0 only, step-major only: the window result, and the current of its fire (the
        window result in its first fire of the image, which keeps it; the kept one after).
    chunk, map_step : In
        Chunk-major only: the chunk of the running pass, and the step of the running pass
        (the emitted map's step that ``map_address`` reads and a fire or pool writes).
    membrane_read_address, membrane_write_address, membrane_write_enable : Out
    membrane_word : In
        Chunk-major only: its drive of the engine's one membrane memory, which every
        module shares (:attr:`~stepvit.rtl.stem_plan.StemPlan.shared_membrane_depth`; no
        two modules' chunks are live at once), and the word read a cycle after the
        address. The write data is the LIFs' ``lif_next_membrane``.
    """

    def __init__(self, plan: StemPlan, index: int, *, bias: np.ndarray | None,
                 threshold: np.ndarray | None, current_bits: int, membrane_bits: int,
                 sum_bits: int, ram_styles: Mapping[str, str] | None = None,
                 rewrite_map: bool | None = None, maps_ddr: bool = False) -> None:
        stage = plan.stages[index]
        if maps_ddr and not plan.chunk_major:
            raise ValueError("the stem's maps go to DDR only from a chunk-major stem")
        self._maps_ddr = maps_ddr
        self._plan, self._index, self._stage = plan, index, stage
        # its memories' attributes by the sizing model's names (rtl/ram_style.py)
        prefix = f"stem.{stage.name.replace('.', '')}"
        self._attrs = {kind: ram_attrs(ram_styles, f"{prefix}_{kind}")
                       for kind in ("lif_map", "out_map", "membranes", "kept")}
        # (imported here: the sizing model's modules import the designs')
        from stepvit.rtl.stem_sizing import rewrites_out_map

        self._chunk_major = plan.chunk_major
        self._rewrites = plan.chunk_major and not maps_ddr and (
            rewrites_out_map(plan, index) if rewrite_map is None else rewrite_map)
        lanes, chunks = plan.lanes, plan.chunks(index)
        padded = chunks * lanes
        self._tables = bias is not None
        if self._tables:
            self._bias, self._threshold = padded_lif_values(plan, index, bias, threshold,
                                                            membrane_bits)
        self._bits = (current_bits, membrane_bits, sum_bits)
        in_channels, in_h, in_w = stage.in_shape
        self._in_bits = PLANES * in_channels if index == 0 else in_channels
        out_positions = int(np.prod(stage.out_shape[1:]))
        _, lif_h, lif_w = stage.lif_shape
        sums = data.ArrayLayout(signed(sum_bits), lanes)
        membranes = data.ArrayLayout(signed(membrane_bits), lanes)
        members = {
            "go_clear": In(1), "go_scatter": In(1), "go_fire": In(1), "go_pool": In(1),
            "fresh": In(1),
            "done": Out(1),
            "in_address": Out(range(max(in_h * in_w, 2))),
            "in_data": In(self._in_bits),
            "map_address": In(range(max(out_positions, 2))),
            "map_data": Out(padded),
            "fired_valid": Out(1),
            "fired": Out(range(lanes + 1)),
            "event_valid": Out(1), "event_y": Out(range(max(in_h, 2))),
            "event_x": Out(range(max(in_w, 2))), "event_channel": Out(range(max(in_channels, 2))),
            "event_chunk": Out(range(max(chunks, 2))),
            "window_valid": Out(1), "window_y": Out(range(max(lif_h, 2))),
            "window_x": Out(range(max(lif_w, 2))), "window_chunk": Out(range(max(chunks, 2))),
            "window_done": In(1),
            "clear_valid": Out(1), "clear_address": Out(range(max(plan.bank_depth(index), 2))),
            "lif_membrane": Out(membranes), "lif_threshold": Out(membranes),
            "lif_bias": Out(sums), "lif_spikes": In(lanes), "lif_next_membrane": In(membranes),
        }
        if index == 0:
            members.update({"go_double": In(1), "plane": In(range(PLANES)),
                            "double_valid": Out(1)})
        if not self._tables:
            for name in ("lif_bias", "lif_threshold"):
                del members[name]
            members["lif_chunk"] = Out(range(max(chunks, 2)))
        if self._chunk_major:
            shared = range(max(plan.shared_membrane_depth, 2))
            members.update({"chunk": In(range(max(chunks, 2))),
                            "map_step": In(range(max(plan.t_max, 2))),
                            "membrane_read_address": Out(shared),
                            "membrane_write_address": Out(shared),
                            "membrane_write_enable": Out(1),
                            "membrane_word": In(membranes)})
        if maps_ddr:
            del members["map_address"], members["map_data"]
            members.update({"map_write_valid": Out(1), "map_write_spikes": Out(lanes)})
            if index > 0:
                members.update({"in_valid": In(1), "in_take": Out(1), "in_wait": Out(1)})
        elif index == 0:
            members.update({"window_max": In(sums), "kept": Out(sums)})
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        """Build the LIF map (and pooled map), the membranes and the loops."""
        m = Module()
        plan, stage = self._plan, self._stage
        width = plan.chunks(self._index) * plan.lanes
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        if self._chunk_major:
            return self._elaborate_chunk_major(m, width, lif_positions)
        lif_map = Memory(shape=unsigned(width), depth=max(lif_positions, 2), init=[],
                         attrs=self._attrs["lif_map"])
        m.submodules.lif_map = lif_map
        lif_write = lif_map.write_port(granularity=plan.lanes)
        lif_read = lif_map.read_port()
        if stage.pool == "after":
            out_map = Memory(shape=unsigned(width), depth=max(int(np.prod(stage.out_shape[1:])), 2),
                             init=[], attrs=self._attrs["out_map"])
            m.submodules.out_map = out_map
            out_write, map_read = out_map.write_port(), out_map.read_port()
        else:
            out_write, map_read = None, lif_read
        m.d.comb += [map_read.addr.eq(self.map_address), self.map_data.eq(map_read.data)]

        idle = Signal()
        loops = [*self._clear_loops(m), self._scatter_loop(m, idle),
                 self._fire_loop(m, lif_write)]
        if out_write is not None:
            loops.append(self._pool_loop(m, lif_read, out_write))
        self._run_loops(m, idle, loops, pooled=out_write is not None)
        return m

    def _elaborate_chunk_major(self, m: Module, width: int, lif_positions: int) -> Module:
        """Build the maps of every step (one chunk's LIF map of one step if pooled after)."""
        plan, stage = self._plan, self._stage
        out_positions = int(np.prod(stage.out_shape[1:]))
        pooled = stage.pool == "after"
        # the emitted map: every step, step t from t·positions (a table: no multiplier)
        # written a chunk's lanes at a time: a write enable a chunk, or where block RAM
        # takes whole words in fewer blocks, the word read a cycle before its write and
        # written back with the pass's chunk replaced (stem_sizing.rewrites_out_map)
        if self._maps_ddr:
            # no map on chip: each write goes out, a chunk of a position, in order
            out_write = _Writes(out_positions, plan.lanes)
            m.d.comb += [self.map_write_valid.eq(out_write.en),
                         self.map_write_spikes.eq(out_write.data)]
            step_base = Const(0, 1)
        else:
            out_write, step_base = self._out_map(m, width, out_positions)
        if pooled:
            lif_map = Memory(shape=unsigned(plan.lanes), depth=max(lif_positions, 2), init=[],
                             attrs=self._attrs["lif_map"])
            m.submodules.lif_map = lif_map
            lif_write, lif_read = lif_map.write_port(), lif_map.read_port()
        else:
            lif_write, lif_read = out_write, None
        idle = Signal()
        loops = [*self._clear_loops(m), self._scatter_loop(m, idle),
                 self._fire_loop(m, lif_write, step_base if not pooled else None)]
        if pooled:
            loops.append(self._pool_loop(m, lif_read, out_write, step_base))
        self._run_loops(m, idle, loops, pooled=pooled)
        return m

    def _out_map(self, m: Module, width: int, out_positions: int):
        """Add the emitted map of every step; return its write port and the step's base."""
        plan = self._plan
        out_map = Memory(shape=unsigned(width), depth=max(plan.t_max * out_positions, 2),
                         init=[], attrs=self._attrs["out_map"])
        m.submodules.out_map = out_map
        out_write = out_map.write_port(granularity=None if self._rewrites else plan.lanes)
        map_read = out_map.read_port()
        step_base = table(m, [step * out_positions for step in range(plan.t_max)],
                          self.map_step, name="step_base")
        # the position its own fire or pool writes next, read the cycle before the write
        self._rewrite = Signal(range(max(out_positions, 2)), name="rewrite_position")
        address = self.map_address
        if self._rewrites:
            address = Mux(self.go_fire | self.go_pool, self._rewrite, self.map_address)
        m.d.comb += [map_read.addr.eq(step_base + address), self.map_data.eq(map_read.data)]
        self._old_word = map_read.data
        return out_write, step_base

    def _run_loops(self, m: Module, idle: Signal, loops: list[Callable[[], None]], *,
                   pooled: bool) -> None:
        """Add the unit's FSM: from ``IDLE`` into the loop each ``go_*`` pulse starts.

        ``loops`` add their states (clear, scatter, fire and, ``pooled``, the OR-pool);
        ``idle`` is high in ``IDLE``.
        """
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.go_clear):
                    m.next = "CLEAR"
                with m.Elif(self.go_scatter):
                    m.next = "LOAD"
                with m.Elif(self.go_fire):
                    m.next = "FIRE"
                if pooled:
                    with m.Elif(self.go_pool):
                        m.next = "POOL"
                if self._index == 0:
                    with m.Elif(self.go_double):
                        m.next = "DOUBLE"
            for states in loops:
                states()
        m.d.comb += idle.eq(fsm.ongoing("IDLE"))

    def _clear_loops(self, m: Module) -> list[Callable[[], None]]:
        """Zero (or for stage 0 also double) every bank's address ``a`` at cycle ``a``.

        Over the part this module uses; both loops drive ``clear_address``.
        """
        depth = self._plan.bank_depth(self._index)
        address = Signal(range(max(depth, 2)))

        def loop(state: str, valid: Signal) -> Callable[[], None]:
            def states() -> None:
                with m.State(state):
                    m.d.comb += [valid.eq(1), self.clear_address.eq(address)]
                    m.d.sync += address.eq(address + 1)
                    with m.If(address == depth - 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += address.eq(0)
                        m.next = "IDLE"
            return states
        loops = [loop("CLEAR", self.clear_valid)]
        if self._index == 0:
            loops.append(loop("DOUBLE", self.double_valid))
        return loops

    def _scatter_loop(self, m: Module, idle: Signal) -> Callable[[], None]:
        """Walk the input words (the next one read while this one walks) into events."""
        _, height, width = self._stage.in_shape
        chunks = self._plan.pass_chunks(self._index)
        m.submodules.walker = walker = SpikeWalker(width=self._in_bits)
        position = Signal(range(max(height * width, 2)))
        y, x = Signal(range(max(height, 2))), Signal(range(max(width, 2)))
        chunk = Signal(range(max(chunks, 2)))
        planes = PLANES if self._index == 0 else 1
        word_done = Signal()
        word = self.in_data
        if self._index == 0:
            # bit i of a pixel word is plane i % 8 of channel i // 8: the pass's plane only
            channels = self._in_bits // PLANES
            word = word & table(m, [sum(1 << (channel * PLANES + plane)
                                        for channel in range(channels))
                                    for plane in range(PLANES)], self.plane, name="plane_bits")
        # a spike word's bit is a channel
        m.d.comb += [
            # a word ending now is followed by position + 1, whose successor is read next
            self.in_address.eq(Mux(idle, 0, position + 1 + word_done)),
            walker.word.eq(word),
            self.event_y.eq(y), self.event_x.eq(x),
            self.event_chunk.eq(self.chunk if self._chunk_major else chunk),
            self.event_channel.eq(table(m, [i // planes for i in range(self._in_bits)],
                                        walker.index, name="channel_of_bit")),
        ]

        # with its input in DDR (maps_ddr, past stage 0) a word is loaded only once it has
        # arrived: LOAD waits for it, and a word that ends before the next has arrived goes
        # through LOAD (the cycles the engine counts as the maps' stalls)
        streamed = self._maps_ddr and self._index > 0
        arrived = self.in_valid if streamed else Const(1)
        if streamed:
            m.d.comb += self.in_take.eq(walker.load)

        def states() -> None:
            with m.State("LOAD"):
                with m.If(arrived):
                    m.d.comb += walker.load.eq(1)
                    m.next = "WALK"
                if streamed:
                    m.d.comb += self.in_wait.eq(~arrived)
            with m.State("WALK"):
                m.d.comb += [self.event_valid.eq(walker.any), word_done.eq(~walker.any)]
                with m.If(walker.any):
                    m.d.sync += chunk.eq(Mux(chunk == chunks - 1, 0, chunk + 1))
                    with m.If(chunk == chunks - 1):
                        m.d.comb += [walker.step.eq(1), word_done.eq(walker.last)]
                with m.If(word_done):
                    with m.If(position == height * width - 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += [position.eq(0), y.eq(0), x.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [position.eq(position + 1),
                                     x.eq(Mux(x == width - 1, 0, x + 1)),
                                     y.eq(Mux(x == width - 1, y + 1, y))]
                        with m.If(arrived):
                            m.d.comb += walker.load.eq(1)
                        with m.Else():
                            if streamed:
                                m.d.comb += self.in_wait.eq(1)
                            m.next = "LOAD"
        return states

    def _fire_loop(self, m: Module, lif_write: WritePort,
                   step_base=None) -> Callable[[], None]:
        """Window maxima plus bias into the LIFs, one chunk a cycle, written three cycles later.

        A window's maximum comes three cycles after its read (:class:`StemConvBanks`); the
        membrane (and stage 0's kept current) is read a cycle after it and registered, so
        they meet the LIFs in the same cycle, no block RAM's output in front of them.
        Chunk-major: one word a position, of the pass's chunk; the spikes go to that
        chunk's lanes of ``lif_write`` (at ``step_base`` plus the position if given, the
        emitted map of every step; else a pooled stage's LIF map of one chunk).
        """
        plan, stage = self._plan, self._stage
        lanes, chunks = plan.lanes, plan.pass_chunks(self._index)
        _, membrane_bits, sum_bits = self._bits
        _, height, width = stage.lif_shape
        positions = height * width
        if self._chunk_major:
            # the engine's one memory of every module's membranes
            membrane_write = _SharedWrite(self.membrane_write_address,
                                          self.membrane_write_enable)
            membrane_read = _SharedRead(self.membrane_read_address, self.membrane_word)
        else:
            membranes = Memory(shape=data.ArrayLayout(signed(membrane_bits), lanes),
                               depth=max(positions * chunks, 2), init=[],
                               attrs=self._attrs["membranes"])
            m.submodules.membranes = membranes
            membrane_write = membranes.write_port()
            membrane_read = membranes.read_port()
        address = Signal(range(max(positions * chunks, 2)))
        y, x = Signal(range(max(height, 2))), Signal(range(max(width, 2)))
        chunk = Signal(range(max(chunks, 2)))
        position = Signal(range(max(positions, 2)))
        issued, read, written = (Signal.like(address) for _ in range(3))
        issued_chunk, read_chunk, written_chunk = (Signal.like(chunk) for _ in range(3))
        issued_position, read_position, written_position = (Signal.like(position)
                                                             for _ in range(3))
        m.d.sync += [read.eq(issued), read_chunk.eq(issued_chunk),
                     read_position.eq(issued_position), written.eq(read),
                     written_chunk.eq(read_chunk), written_position.eq(read_position)]
        membrane = Signal.like(membrane_read.data, name="membrane_held")
        m.d.sync += membrane.eq(membrane_read.data)
        m.d.comb += [self.window_y.eq(y), self.window_x.eq(x),
                     self.window_chunk.eq(self.chunk if self._chunk_major else chunk),
                     membrane_read.addr.eq(issued)]

        def states() -> None:
            with m.State("FIRE"):
                m.d.comb += self.window_valid.eq(1)
                m.d.sync += [address.eq(address + 1), issued.eq(address),
                             issued_chunk.eq(chunk), issued_position.eq(position),
                             chunk.eq(Mux(chunk == chunks - 1, 0, chunk + 1))]
                with m.If(chunk == chunks - 1):
                    m.d.sync += [position.eq(position + 1), x.eq(Mux(x == width - 1, 0, x + 1)),
                                 y.eq(Mux(x == width - 1, y + 1, y))]
                with m.If(address == positions * chunks - 1):
                    m.d.sync += [address.eq(0), position.eq(0), x.eq(0), y.eq(0), chunk.eq(0)]
                    m.next = "FIRE_DRAIN"
            with m.State("FIRE_DRAIN"):
                m.next = "FIRE_DRAIN2"
            with m.State("FIRE_DRAIN2"):
                m.next = "FIRE_TAIL"
            with m.State("FIRE_TAIL"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        if self._index == 0 and not self._chunk_major:
            self._keep(m, positions * chunks, (issued, written))
        if self._chunk_major:
            # the pass's chunk, held through the pass: its tables and lanes
            written_chunk = self.chunk
        # the banks' results are every module's: this unit's fire takes them only in its pass
        fired = self.window_done & self.go_fire
        if self._tables:
            bias = _chunk_table(self._bias, lanes, sum_bits, written_chunk)
            threshold = _chunk_table(self._threshold, lanes, membrane_bits, written_chunk)
            for lane in range(lanes):
                m.d.comb += [
                    self.lif_bias[lane].eq(bias[lane]),
                    self.lif_membrane[lane].eq(Mux(self.fresh, 0, membrane[lane])),
                    self.lif_threshold[lane].eq(threshold[lane]),
                ]
        else:
            m.d.comb += self.lif_chunk.eq(written_chunk)
            for lane in range(lanes):
                m.d.comb += self.lif_membrane[lane].eq(Mux(self.fresh, 0, membrane[lane]))
        if self._chunk_major:
            pooled = step_base is None
            if not pooled and self._rewrites:
                # the emitted map's word of the next write, read a cycle before it
                m.d.comb += self._rewrite.eq(read_position)
            spikes = [
                lif_write.addr.eq(written_position if pooled
                                  else step_base + written_position),
                lif_write.data.eq(self.lif_spikes if pooled
                                  else self._merged(self.lif_spikes)),
                lif_write.en.eq(fired if pooled else self._chunk_enable(fired)),
            ]
        else:
            spikes = [
                lif_write.addr.eq(written_position),
                lif_write.data.eq(self.lif_spikes.replicate(chunks)),
                lif_write.en.eq(Mux(fired, Const(1, chunks) << written_chunk, 0)),
            ]
        m.d.comb += [
            membrane_write.addr.eq(written), membrane_write.en.eq(fired),
            *([] if self._chunk_major else [membrane_write.data.eq(self.lif_next_membrane)]),
            *spikes,
            self.fired_valid.eq(fired),
            self.fired.eq(sum(self.lif_spikes[lane] for lane in range(lanes))),
        ]
        return states

    def _keep(self, m: Module, depth: int, pipeline: tuple[Signal, Signal]) -> None:
        """Stage 0's kept current: its first fire writes the window maxima, the later read them.

        Its current is the image's, the same at every step, and the banks are the other
        modules' between its steps: so it is kept here, at the pooled size (a quarter of
        the banks' words for a pool of stride 2), rather than in banks of its own.
        """
        issued, written = pipeline
        current_bits, _, _ = self._bits
        kept = Memory(shape=data.ArrayLayout(signed(current_bits), self._plan.lanes),
                      depth=max(depth, 2), init=[], attrs=self._attrs["kept"])
        m.submodules.kept = kept
        kept_write, kept_read = kept.write_port(), kept.read_port()
        held = Signal.like(kept_read.data, name="kept_held")
        m.d.sync += held.eq(kept_read.data)
        m.d.comb += [kept_write.addr.eq(written), kept_read.addr.eq(issued),
                     kept_write.en.eq(self.window_done & self.go_fire & self.fresh)]
        for lane in range(self._plan.lanes):
            m.d.comb += [kept_write.data[lane].eq(self.window_max[lane]),
                         self.kept[lane].eq(Mux(self.fresh, self.window_max[lane], held[lane]))]

    def _pool_loop(self, m: Module, lif_read: ReadPort, out_write: WritePort,
                   step_base=None) -> Callable[[], None]:
        """OR-pool the LIF map into the emitted map: each window's words read one a cycle.

        Chunk-major (``step_base`` given): the LIF map is the pass's chunk's, its ORs go to
        that chunk's lanes of the emitted map at ``step_base`` plus the pooled position.
        """
        stage, (kernel, stride, padding) = self._stage, self._plan.pool
        _, height, width = stage.lif_shape
        out_h, out_w = (conv_out(size, kernel, stride, padding) for size in (height, width))
        valid, address = [], []
        for oy in range(out_h):
            for ox in range(out_w):
                for dy in range(kernel):
                    for dx in range(kernel):
                        y, x = oy * stride - padding + dy, ox * stride - padding + dx
                        inside = 0 <= y < height and 0 <= x < width
                        valid.append(int(inside))
                        address.append(y * width + x if inside else 0)
        window = kernel * kernel
        step = Signal(range(max(len(valid), 2)))
        issued, taken, first, last = Signal(), Signal(), Signal(), Signal()
        output = Signal(range(max(out_h * out_w, 2)))
        held = Signal(len(lif_read.data))
        # the step's read: its LIF position, whether inside, first or last of its window, and
        # the window's output position (one table of rows)
        read = row_table(m, [{"address": a, "valid": v, "first": int(i % window == 0),
                              "last": int(i % window == window - 1), "output": i // window}
                             for i, (a, v) in enumerate(zip(address, valid))],
                         step, name="pool_read")
        m.d.comb += lif_read.addr.eq(read.address)
        m.d.sync += issued.eq(0)

        def states() -> None:
            with m.State("POOL"):
                m.d.sync += [issued.eq(1), taken.eq(read.valid), first.eq(read.first),
                             last.eq(read.last), output.eq(read.output), step.eq(step + 1)]
                with m.If(step == len(valid) - 1):
                    m.d.sync += step.eq(0)
                    m.next = "POOL_TAIL"
            with m.State("POOL_TAIL"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
        merged = Mux(first, 0, held) | Mux(taken, lif_read.data, 0)
        with m.If(issued):
            m.d.sync += held.eq(merged)
        if step_base is None:
            m.d.comb += [out_write.addr.eq(output), out_write.data.eq(merged),
                         out_write.en.eq(issued & last)]
        else:
            if self._rewrites:
                # the emitted map's word of the window ending now, read a cycle before
                m.d.comb += self._rewrite.eq(read.output)
            m.d.comb += [out_write.addr.eq(step_base + output),
                         out_write.data.eq(self._merged(merged)),
                         out_write.en.eq(self._chunk_enable(issued & last))]
        return states

    def _merged(self, spikes):
        """Return the emitted map's word to write, ``spikes`` in chunk ``chunk``'s lanes.

        Chunk-major only. Rewritten whole words: the word read the cycle before
        (``_rewrite``), the other chunks' lanes keeping its bits; else ``spikes`` in every
        chunk's lanes, the write enable the chunk's (:meth:`_chunk_enable`).
        """
        lanes, chunks = self._plan.lanes, self._plan.chunks(self._index)
        if self._maps_ddr:
            return spikes
        if not self._rewrites:
            return spikes.replicate(chunks)
        return Cat(*(Mux(self.chunk == k, spikes, self._old_word[k * lanes:(k + 1) * lanes])
                     for k in range(chunks)))

    def _chunk_enable(self, write: Value):
        """Return the emitted map's write enable for ``write`` (a chunk's, or the word's)."""
        if self._rewrites or self._maps_ddr:
            return write
        return Mux(write, Const(1, self._plan.chunks(self._index)) << self.chunk, 0)


class _Writes:
    """A chunk-major unit's map writes with no map (``maps_ddr``): a write port's signals."""

    def __init__(self, positions: int, lanes: int) -> None:
        self.addr = Signal(range(max(positions, 2)), name="map_write_position")
        self.data = Signal(lanes, name="map_write_data")
        self.en = Signal(name="map_write_en")


class _SharedWrite:
    """The write port a chunk-major unit drives of the engine's shared membranes."""

    def __init__(self, addr: Signal, en: Signal) -> None:
        self.addr, self.en = addr, en


class _SharedRead:
    """The read port a chunk-major unit drives of the engine's shared membranes."""

    def __init__(self, addr: Signal, data: Value) -> None:
        self.addr, self.data = addr, data


def padded_lif_values(plan: StemPlan, index: int, bias: np.ndarray, threshold: np.ndarray,
                      membrane_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return module ``index``'s biases and thresholds padded to whole chunks of lanes.

    A spare lane gets zero bias and a threshold no membrane reaches (the largest
    ``membrane_bits`` value): it never fires.
    """
    padded = plan.chunks(index) * plan.lanes
    biases = np.zeros(padded, dtype=np.int64)
    biases[:len(bias)] = bias
    thresholds = np.full(padded, (1 << (membrane_bits - 1)) - 1, dtype=np.int64)
    thresholds[:len(threshold)] = threshold
    return biases, thresholds


def chunk_words(values: np.ndarray, lanes: int, bits: int) -> list[int]:
    """Return ``values`` packed ``lanes`` a word, lane 0 in the low bits, two's complement."""
    words = []
    for start in range(0, len(values), lanes):
        word = 0
        for lane, value in enumerate(values[start:start + lanes]):
            word |= (int(value) & ((1 << bits) - 1)) << (bits * lane)
        words.append(word)
    return words


def _chunk_table(values: np.ndarray, lanes: int, bits: int, chunk: Signal) -> data.View:
    """Return the ``lanes`` signed values of chunk ``chunk`` as a view of a constant table."""
    layout = data.ArrayLayout(signed(bits), lanes)
    words = [Const(word, unsigned(bits * lanes)) for word in chunk_words(values, lanes, bits)]
    return data.View(layout, Array(words)[chunk])


__all__ = ["StemModuleUnit", "chunk_words", "padded_lif_values"]
