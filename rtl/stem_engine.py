"""The stem engine: the convolutional stem (SPEC.md section 5) of one image, pass by pass.

A sequencer walks the plan's passes (:class:`~stepvit.rtl.stem_plan.StemPlan`) like spikes:
at ``start`` it loads the vector of the passes whose mask gate holds, and a priority encoder
gives the current one, so a masked module's passes cost no cycle at all (a
:class:`~stepvit.rtl.spike_walker.GroupedWalker`: it holds 32 passes at a time, the vector
being logic on the masks the engine holds). Each pass is run
by its module's :class:`~stepvit.rtl.stem_unit.StemModuleUnit` through the one datapath
they share, the conv banks (:class:`~stepvit.rtl.stem_conv.StemConvBanks`) and the LIF
lanes, which take the inputs of the running module; the tokens pass, run here,
reads the last stage's and the RPE's spike words and emits ``X = E·(S_last + R)`` for every
token and chunk of the step (two selected adds of ``E``: no multiplier), in place of the
embedding's stream of the core.

A chunk-major plan (``StemPlan(chunk_major=True)``) gives each pass a chunk as well: the
sequencer's table says it, every unit reads it (and the pass's step, the step of its maps),
and a unit's membranes read as 0 at the first fire of each of its chunks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from stepvit.rtl.lif import LIFLanes
from stepvit.rtl.ram_style import ram_attrs
from stepvit.rtl.spike_walker import GroupedWalker
from stepvit.rtl.stem_conv import StemConv, StemConvBanks, shared_sum_bits
from stepvit.rtl.stem_map_ddr import StemMapDdr, dense_word
from stepvit.rtl.stem_plan import PASS_KINDS, PLANES, StemPlan
from stepvit.rtl.stem_tiles import StemTileBuffer, StemTiles
from stepvit.rtl.stem_unit import StemModuleUnit
from stepvit.rtl.tables import row_table, table

#: Width of a stem layer's spike count in ``counts``.
COUNT_BITS = 32
#: Weight-image names of a ``weights="ddr"`` engine's RAMs: the tap weights (one memory a
#: kernel tap, ``stem_tap0`` ..), every module's biases and every module's thresholds; the
#: spike values are the core's ``stream_spike`` words, the same name.
STEM_TAP_PREFIX = "stem_tap"
STEM_BIASES = "stem_biases"
STEM_THRESHOLDS = "stem_thresholds"
STREAM_SPIKE = "stream_spike"


class StemEngine(wiring.Component):
    """The stem of one export: pixels in, the stream's tokens of every step out.

    Parameters
    ----------
    plan : StemPlan
        The stem and its lanes.
    arrays : dict of str to numpy.ndarray
        The export's ``stem.*.weight``, ``stem.*.bias`` and ``stream_spike``.
    thresholds : dict of str to numpy.ndarray
        The export's thresholds (``stem.i``, ``stem.rpe``).
    bits : dict of str to int
        The export's bit widths.
    leak_shift : int
        The LIF's leak shift.
    reset : str
        ``"hard"`` or ``"soft"``.
    token_lanes : int, optional
        Channels of one token word (the core's lanes; default the stem's): the stem's conv
        lanes and the core's need not be the same.
    writable : bool
        A ``weights="ddr"`` engine: no value of ``arrays`` or ``thresholds`` is used (only
        the weights' shapes); the tap weights, the biases and thresholds of every module
        and the spike values ``E`` sit in RAMs with no contents, whose write ports
        :attr:`parameter_writes` names (:func:`stepvit.rtl.design_image.stem_memories`).
        The biases and thresholds are two RAMs of every module's chunks, module ``i``'s
        from :func:`lif_bases` ``[i]``, read asynchronously (the tables' timing);
        ``E`` a copy of the core's ``stream_spike`` memory, written by the same port.
    tiles : StemTiles, optional
        A ``writable`` chunk-major engine that streams its tap weights from DDR: no tap
        memory; each scatter reads its ``(module, chunk)``'s tile from a
        :class:`~stepvit.rtl.stem_tiles.StemTileBuffer` (:attr:`tile_buffer`, whose AXI
        ports, ``weights_base`` and ``enable`` the core drives), and waits while its tile
        has not arrived.
    data_width, max_burst : int
        With ``tiles`` only: the AXI beat's bits and the longest burst.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed in UltraRAM or LUTs, by its names (the stem's
        with ``stem.`` before), and their ``ram_style`` (:mod:`stepvit.rtl.ram_style`).
        Default: none.
    rewrite_maps : bool, optional
        Chunk-major only: every unit writes its emitted map whole words (``True``), or a
        chunk's lanes with their own write enable (``False``). Default: each unit as the
        sizing model says (:func:`~stepvit.rtl.stem_sizing.rewrites_out_map`).
    maps_ddr : bool, optional
        Chunk-major only: keep the modules' emitted maps in DDR
        (:class:`~stepvit.rtl.stem_map_ddr.StemMapDdr`, :attr:`map_unit`, whose AXI read
        port, ``map_*`` writes, ``base`` and ``answered`` the core drives): a fire or pool
        pass starts only with room to stage its writes, a scatter only once its source
        map's writes are answered, and the tokens pass only once every map's are; the
        scatters and the tokens take their words as they arrive. ``map_waiting`` is high
        in the cycles these waits cost. Default ``False``.

    Members
    -------
    pixel_valid, pixel_bank, pixel_address, pixel_data : In
        Write pixels of one position into pixel bank ``pixel_bank``: channel ``c`` in byte
        ``c``, written where bit ``c`` of ``pixel_valid`` is set.
    start, bank : In(1)
        Begin an image from pixel bank ``bank`` with the masks in ``mask`` (ignored while
        busy). Two banks: the next image's pixels load while this one computes.
    mask : In(modules · T)
        The stem modules' mask rows, bit ``module · T + t``.
    busy : Out(1)
        An image is in progress.
    hold_tokens : In(1)
        The tokens passes wait while it is high (one stream buffer: the blocks still read
        the stream of the image before); the other passes run.
    tokens_waiting : Out(1)
        A tokens pass is due and waits for ``hold_tokens`` to fall.
    token_valid, token_step, token_index, token_chunk, token_data : Out
        One chunk of the stream ``X`` at one step and token.
    token_stall : In(1)
        The chunk offered (``token_valid``) is not taken this cycle: it is offered again
        (the stream's writes to DDR have no room).
    counts : Out(ArrayLayout(unsigned(32), modules))
        Each stem layer's spikes over the image so far (before any OR-pool).
    map_waiting : Out(1)
        With ``maps_ddr``: the stem waits for its maps this cycle (a cycle the exact cycle
        model does not count).
    """

    def __init__(self, plan: StemPlan, *, arrays: dict[str, np.ndarray],
                 thresholds: dict[str, np.ndarray], bits: dict[str, int], leak_shift: int,
                 reset: str, token_lanes: int | None = None, writable: bool = False,
                 tiles: StemTiles | None = None, data_width: int = 64,
                 max_burst: int = 16, ram_styles: Mapping[str, str] | None = None,
                 rewrite_maps: bool | None = None, maps_ddr: bool = False) -> None:
        if tiles is not None and not (writable and plan.chunk_major):
            raise ValueError("stem tiles need a writable chunk-major engine")
        #: ``maps_ddr`` only: the unit that keeps the maps in DDR (else None).
        self.map_unit = (StemMapDdr(plan, data_width=data_width, max_burst=max_burst)
                         if maps_ddr else None)
        self._plan = plan
        self._token_lanes = token_lanes or plan.lanes
        self._writable = writable
        self._units = []
        self._ram_styles = dict(ram_styles or {})
        sum_bits = shared_sum_bits(bits)
        for index, stage in enumerate(plan.stages):
            self._units.append(StemModuleUnit(
                plan, index, bias=None if writable else arrays[f"{stage.name}.bias"],
                threshold=None if writable else thresholds[stage.name],
                current_bits=bits["embed_current" if index == 0 else "current"],
                membrane_bits=bits["membrane"], sum_bits=sum_bits, ram_styles=ram_styles,
                rewrite_map=rewrite_maps, maps_ddr=maps_ddr))

        def weight(name: str) -> np.ndarray:
            # a ddr engine must not depend on the values: their shape only
            values = arrays[f"{name}.weight"]
            return np.zeros(np.shape(values), dtype=np.int64) if writable else values
        self._conv = StemConvBanks(
            [StemConv(weight(stage.name), stage.in_shape[1:], stage.stride,
                      stage.padding, plan.window_pool(index))
             for index, stage in enumerate(plan.stages)], lanes=plan.lanes, sum_bits=sum_bits,
            writable=writable, chunk_major=plan.chunk_major,
            tile_depth=None if tiles is None else tiles.depth, ram_styles=ram_styles)
        #: ``tiles`` only: the stem tile buffer (its fetch side is the core's to drive).
        self.tile_buffer = (None if tiles is None else StemTileBuffer(
            tiles, lanes=plan.lanes, modules=len(plan.stages), t_max=plan.t_max,
            data_width=data_width, max_burst=max_burst, ram_styles=ram_styles))
        self._tiles = tiles
        self._lif = LIFLanes(lanes=plan.lanes, membrane_bits=bits["membrane"],
                             current_bits=sum_bits, leak_shift=leak_shift, reset=reset)
        self._stream_spike = np.asarray(arrays["stream_spike"], dtype=np.int64)
        self._stream_bits = bits["stream"]
        channels, height, width = plan.stages[0].in_shape
        tokens_shape = plan.stages[plan.last_stage].out_shape
        self._token_chunks = -(-tokens_shape[0] // self._token_lanes)
        self._tokens = tokens_shape[1] * tokens_shape[2]
        #: ``writable`` only: each parameter RAM's write port, by its weight-image name.
        self.parameter_writes: dict[str, WritePort] = {}
        if writable:
            self._stream_spike = np.zeros_like(self._stream_spike)
            self._lif_rams = {
                STEM_BIASES: Memory(shape=unsigned(sum_bits * plan.lanes),
                                    depth=max(lif_depth(plan), 2), init=[]),
                STEM_THRESHOLDS: Memory(shape=unsigned(bits["membrane"] * plan.lanes),
                                        depth=max(lif_depth(plan), 2), init=[]),
            }
            self._stream_ram = Memory(shape=unsigned(self._stream_bits * self._token_lanes),
                                      depth=max(self._token_chunks, 2), init=[])
            self.parameter_writes = {
                **{tap_memory_name(tap): port
                   for tap, port in enumerate(self._conv.tap_writes)},
                **{name: ram.write_port() for name, ram in self._lif_rams.items()},
                STREAM_SPIKE: self._stream_ram.write_port(),
            }
        modules = len(plan.stages)
        super().__init__({
            "pixel_valid": In(channels),
            "pixel_bank": In(1),
            "pixel_address": In(range(max(height * width, 2))),
            "pixel_data": In(PLANES * channels),
            "start": In(1),
            "bank": In(1),
            "mask": In(modules * plan.t_max),
            "busy": Out(1),
            "hold_tokens": In(1),
            "token_stall": In(1),
            "tokens_waiting": Out(1),
            "token_valid": Out(1),
            "token_step": Out(range(max(plan.t_max, 2))),
            "token_index": Out(range(max(self._tokens, 2))),
            "token_chunk": Out(range(max(self._token_chunks, 2))),
            "token_data": Out(data.ArrayLayout(signed(self._stream_bits), self._token_lanes)),
            "counts": Out(data.ArrayLayout(unsigned(COUNT_BITS), modules)),
            **({"map_waiting": Out(1)} if maps_ddr else {}),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the units, the pixel memory, the pass sequencer and the tokens loop."""
        m = Module()
        plan = self._plan
        passes = plan.passes()
        for index, unit in enumerate(self._units):
            m.submodules[f"module{index}"] = unit
        m.submodules.conv, m.submodules.lif = self._conv, self._lif
        _, height, width = plan.stages[0].in_shape
        positions = height * width
        pixels = Memory(shape=unsigned(len(self.pixel_data)), depth=2 * positions, init=[],
                        attrs=ram_attrs(self._ram_styles, "stem.pixels"))
        m.submodules.pixels = pixels
        pixel_write = pixels.write_port(granularity=PLANES)
        pixel_read = pixels.read_port()
        bank = Signal()
        m.d.comb += [pixel_write.addr.eq(Mux(self.pixel_bank, positions, 0) + self.pixel_address),
                     pixel_write.data.eq(self.pixel_data), pixel_write.en.eq(self.pixel_valid),
                     pixel_read.addr.eq(Mux(bank, positions, 0) + self._units[0].in_address),
                     self._units[0].in_data.eq(pixel_read.data)]

        # the passes' gates, logic on the masks: the live ones at the load, then the held
        # ones (the walker reads its next group of passes from them)
        m.submodules.sequencer = sequencer = GroupedWalker(width=len(passes))
        held = Signal(len(self.mask))
        # signals, not expressions: every pass's gate reads their bits
        launch, gated = Signal(), Signal(len(self.mask))
        m.d.comb += [launch.eq(self.start & ~sequencer.any),
                     gated.eq(Mux(launch, self.mask, held))]
        m.d.comb += sequencer.word.eq(Cat(*self._gates(m, passes, gated)))
        with m.If(launch):
            m.d.comb += sequencer.load.eq(1)
            m.d.sync += [held.eq(self.mask), bank.eq(self.bank)] + [
                count.eq(0) for count in self.counts]
        entry = self._pass_table(m, passes, sequencer.index)
        kind, module, step = entry.kind, entry.module, entry.step
        is_tokens = sequencer.any & (kind == PASS_KINDS.index("tokens"))
        pass_done = Signal()
        m.d.comb += [self.busy.eq(sequencer.any), sequencer.step.eq(pass_done)]
        # the tokens loop first: a scatter's reads of the same maps override its addresses
        chunk = entry.chunk if plan.chunk_major else None
        tokens_done = self._tokens_loop(m, is_tokens, step, held)
        with m.If(is_tokens):
            m.d.comb += pass_done.eq(tokens_done)
        if plan.chunk_major:
            for unit in self._units:
                m.d.comb += [unit.chunk.eq(chunk), unit.map_step.eq(step)]
        waiting = None
        if self._tiles is not None:
            waiting = self._take_tiles(m, entry.tile,
                                       sequencer.any & (kind == PASS_KINDS.index("scatter")))
        if self.map_unit is not None:
            map_wait = self._map_passes(m, sequencer.any, kind, module, step, chunk,
                                        pass_done, waiting)
            waiting = map_wait if waiting is None else waiting | map_wait
        # stage 0's scatters walk one bit plane each
        m.d.comb += self._units[0].plane.eq(entry.plane)
        self._drive_units(m, sequencer.any, kind, module, pass_done, chunk, waiting)
        self._share_datapath(m, module)
        return m

    def _pass_table(self, m: Module, passes, index: Signal) -> data.View:
        """Return the current pass's fields, read from one table of every pass.

        One signal (:func:`~stepvit.rtl.tables.row_table`): a field used in many places is
        a wire, not a copy of the table (a 4,564-pass table read once for each use was 24
        MB of Verilog).
        """
        tiles = self._tiles
        return row_table(m, [{"kind": PASS_KINDS.index(p.kind), "module": max(p.module, 0),
                              "step": max(p.step, 0), "chunk": p.chunk, "plane": p.plane,
                              "tile": (tiles.index(max(p.module, 0), p.chunk)
                                       if tiles is not None and p.kind == "scatter" else 0)}
                             for p in passes], index, name="pass_entry")

    def _take_tiles(self, m: Module, want, scatter) -> Signal:
        """Add the stem tile buffer; ask it for the running scatter's tile ``want``.

        Returns "the scatter waits for its tile" (its unit is not started meanwhile).
        """
        buffer = self.tile_buffer
        m.submodules.tiles = buffer
        m.d.comb += [buffer.mask.eq(self.mask), buffer.need.eq(scatter),
                     buffer.want.eq(want),
                     buffer.read_addr.eq(self._conv.tile_addr),
                     self._conv.tile_data.eq(buffer.read_data)]
        return buffer.waiting

    def _gates(self, m: Module, passes, mask: Signal) -> list:
        """Return every pass's gate as logic on the mask bits (1 for the tokens).

        Passes of one gate share one signal: the chunks of a module repeat its steps' gates.
        """
        t_max, shared, gates = self._plan.t_max, {}, []
        for stem_pass in passes:
            key = (tuple(stem_pass.gate), tuple(stem_pass.masked))
            if key not in shared:
                gate = Const(1, 1)
                for module, step in stem_pass.gate:
                    gate = gate & mask[module * t_max + step]
                for module, step in stem_pass.masked:
                    gate = gate & ~mask[module * t_max + step]
                shared[key] = Signal(name=f"gate{len(shared)}")
                m.d.comb += shared[key].eq(gate)
            gates.append(shared[key])
        return gates

    def _drive_units(self, m: Module, running: Signal, kind, module, pass_done: Signal,
                     chunk=None, waiting=None) -> None:
        """Start each unit's passes, route the input maps, count the spikes and the dones.

        ``chunk`` (chunk-major): the pass's chunk; a unit is fresh until the first fire of
        each of its chunks (a chunk's passes are consecutive). ``waiting`` (streamed tap
        weights): no unit starts while it is high.
        """
        plan = self._plan
        touched = Signal(len(self._units))
        with m.If(self.start & ~running):
            m.d.sync += touched.eq(0)
        if chunk is not None:
            # the chunk of the unit's last fire: its membranes are that chunk's
            fired_chunk = Signal.like(chunk, name="fired_chunk")
        for index, unit in enumerate(self._units):
            mine = running & (module == index) & (kind != PASS_KINDS.index("tokens"))
            if waiting is not None:
                mine = mine & ~waiting
            m.d.comb += [
                unit.go_clear.eq(mine & (kind == PASS_KINDS.index("clear"))),
                unit.go_scatter.eq(mine & (kind == PASS_KINDS.index("scatter"))),
                unit.go_fire.eq(mine & (kind == PASS_KINDS.index("fire"))),
                unit.go_pool.eq(mine & (kind == PASS_KINDS.index("pool"))),
            ]
            if index == 0:
                m.d.comb += unit.go_double.eq(mine & (kind == PASS_KINDS.index("double")))
            if chunk is None:
                m.d.comb += unit.fresh.eq(~touched[index])
            else:
                m.d.comb += unit.fresh.eq(~touched[index] | (fired_chunk != chunk))
            with m.If(mine & unit.done):
                m.d.comb += pass_done.eq(1)
                with m.If(unit.go_fire):
                    m.d.sync += touched[index].eq(1)
                    if chunk is not None:
                        m.d.sync += fired_chunk.eq(chunk)
            with m.If(unit.fired_valid):
                m.d.sync += self.counts[index].eq(self.counts[index] + unit.fired)
            if index > 0 and self.map_unit is not None:
                # its input words from DDR, as they arrive
                maps = self.map_unit
                m.d.comb += [unit.in_data.eq(dense_word(maps.word_data, maps.layout, plan,
                                                        plan.source(index))),
                             unit.in_valid.eq(maps.word_valid)]
                with m.If(unit.go_scatter):
                    m.d.comb += maps.word_take.eq(unit.in_take)
            elif index > 0:
                source = self._units[plan.source(index)]
                m.d.comb += unit.in_data.eq(source.map_data)
                with m.If(unit.go_scatter):
                    m.d.comb += source.map_address.eq(unit.in_address)

    def _map_passes(self, m: Module, running: Signal, kind, module, step, chunk,
                    pass_done: Signal, tiles_waiting) -> Signal:
        """Add the maps' DDR unit; return "the pass waits for the maps" (before it begins).

        A fire or pool pass waits for room to stage a whole pass's writes; a scatter past
        stage 0 for every write of its source map to be answered. A pass's first cycle
        queues its writes' header (a fire or pool) or opens its reads (a scatter). The units'
        map writes go to the staging FIFO.
        """
        plan, maps, units = self._plan, self.map_unit, self._units
        m.submodules.maps = maps
        kinds = PASS_KINDS.index
        begun = Signal(name="map_pass_begun")
        # the passes that write the emitted map: a fire (of a stage that does not pool after
        # its LIF, whose fire writes its LIF map on chip) or a pool
        pooled_after = table(m, [int(stage.pool == "after") for stage in plan.stages], module,
                             name="map_pooled_after")
        writes = (((kind == kinds("fire")) & ~pooled_after[0]) | (kind == kinds("pool")))
        source = table(m, [max(plan.source(i), 0) for i in range(len(units))], module,
                       name="map_source")
        reads = (kind == kinds("scatter")) & (module != 0)
        wait = Signal(name="map_pass_wait")
        m.d.comb += wait.eq(running & ~begun & (kind != kinds("tokens"))
                            & ((writes & ~maps.write_room)
                               | (reads & maps.pending & (maps.written_module == source))))
        go = running & (kind != kinds("tokens")) & ~wait
        if tiles_waiting is not None:
            go = go & ~tiles_waiting
        with m.If(pass_done):
            m.d.sync += begun.eq(0)
        with m.Elif(go):
            m.d.sync += begun.eq(1)
        first = go & ~begun
        m.d.comb += [
            maps.open_write.eq(first & writes), maps.write_module.eq(module),
            maps.write_step.eq(step), maps.write_chunk.eq(chunk),
            maps.open_read.eq((first & reads) | self._tokens_read),
            maps.read_module.eq(source), maps.read_step.eq(step),
            maps.read_tokens.eq(self._tokens_read),
            maps.spike_valid.eq(Cat(*(u.map_write_valid for u in units)).any()),
        ]
        for unit in units:
            with m.If(unit.map_write_valid):
                m.d.comb += maps.spike_data.eq(unit.map_write_spikes)
        counted = wait if tiles_waiting is None else wait & ~tiles_waiting
        m.d.comb += self.map_waiting.eq(counted | self._tokens_map_wait
                                        | Cat(*(u.in_wait for u in units[1:])).any())
        return wait

    def _share_datapath(self, m: Module, pass_module) -> None:
        """Give the conv banks and the LIF lanes the inputs of the running module's unit.

        The banks' results go to every unit; each takes them only in its own pass.
        """
        conv, lif, units = self._conv, self._lif, self._units
        # registered: the pass's priority encoder is not in front of the datapath's selects;
        # a pass's first cycle, a unit's IDLE, drives nothing into the datapath
        module = Signal.like(pass_module, name="datapath_module")
        m.d.sync += module.eq(pass_module)
        m.d.comb += conv.module.eq(module)
        for name in ("event_valid", "event_y", "event_x", "event_channel", "event_chunk",
                     "window_valid", "window_y", "window_x", "window_chunk",
                     "clear_valid", "clear_address"):
            m.d.comb += getattr(conv, name).eq(Array(getattr(u, name) for u in units)[module])
        # only stage 0 doubles (in its own passes: its unit is idle in the others')
        m.d.comb += conv.double_valid.eq(units[0].double_valid)
        if not self._plan.chunk_major:
            m.d.comb += units[0].window_max.eq(conv.window_max)
        for unit in units:
            m.d.comb += [unit.window_done.eq(conv.window_done), unit.lif_spikes.eq(lif.spikes),
                         unit.lif_next_membrane.eq(lif.next_membrane)]
        if self._plan.chunk_major:
            self._share_membranes(m, module)
        if self._writable:
            self._share_lif_rams(m, module)
            return
        for lane in range(self._plan.lanes):
            # stage 0's current after its first fire is its kept one, the others' the banks'
            window = self._window(module, lane)
            m.d.comb += [
                lif.current[lane].eq(window + Array(u.lif_bias[lane] for u in units)[module]),
                lif.membrane[lane].eq(Array(u.lif_membrane[lane] for u in units)[module]),
                lif.threshold[lane].eq(Array(u.lif_threshold[lane] for u in units)[module]),
            ]

    def _share_membranes(self, m: Module, module: Signal) -> None:
        """Build the one membrane memory every module of a chunk-major stem shares.

        Chunk-major, a module's membranes live from its chunk's first fire (which reads
        them as 0) to its last step, and no other module fires in between: so one memory
        as deep as the largest module's LIF map (``StemPlan.shared_membrane_depth``), read
        at the running module's address and written by the one unit that fires.
        """
        units = self._units
        memory = Memory(shape=units[0].membrane_word.shape(),
                        depth=max(self._plan.shared_membrane_depth, 2), init=[],
                        attrs=ram_attrs(self._ram_styles, "stem.membranes"))
        m.submodules.membranes = memory
        write, read = memory.write_port(), memory.read_port()
        # the running module's unit reads and writes (its fire's writes end within its pass)
        m.d.comb += [
            read.addr.eq(Array(u.membrane_read_address for u in units)[module]),
            write.en.eq(Array(u.membrane_write_enable for u in units)[module]),
            write.addr.eq(Array(u.membrane_write_address for u in units)[module]),
            write.data.eq(self._lif.next_membrane),
        ]
        for unit in units:
            m.d.comb += unit.membrane_word.eq(read.data)

    def _window(self, module: Signal, lane: int):
        """Return the current of ``lane`` into the LIFs (before the bias).

        Stage 0's kept one in a step-major plan; chunk-major, the banks' always (stage 0's
        chunk stays in them).
        """
        if self._plan.chunk_major:
            return self._conv.window_max[lane]
        return Mux(module == 0, self._units[0].kept[lane], self._conv.window_max[lane])

    def _share_lif_rams(self, m: Module, module: Signal) -> None:
        """Feed the LIF lanes with the biases and thresholds RAMs' words of the running unit.

        Both are read asynchronously at the module's first word plus the chunk the unit
        fires, in the cycle the constant tables would answer.
        """
        units, lanes = self._units, self._plan.lanes
        bases = lif_bases(self._plan)
        address = Array(base + unit.lif_chunk for base, unit in zip(bases, units))[module]
        words = {}
        for name, ram in self._lif_rams.items():
            m.submodules[name] = ram
            port = ram.read_port(domain="comb")
            m.d.comb += port.addr.eq(address)
            words[name] = port.data
        sum_bits = len(self._conv.window_max[0])
        biases = data.View(data.ArrayLayout(signed(sum_bits), lanes), words[STEM_BIASES])
        membrane_bits = len(self._lif.threshold[0])
        thresholds = data.View(data.ArrayLayout(signed(membrane_bits), lanes),
                               words[STEM_THRESHOLDS])
        for lane in range(lanes):
            window = self._window(module, lane)
            m.d.comb += [
                self._lif.current[lane].eq(window + biases[lane]),
                self._lif.membrane[lane].eq(Array(u.lif_membrane[lane] for u in units)[module]),
                self._lif.threshold[lane].eq(thresholds[lane]),
            ]

    def _tokens_loop(self, m: Module, go: Signal, step, held: Signal) -> Signal:
        """Emit ``X = E·(S_last + R)``, a chunk a cycle; return the pass's done."""
        plan, lanes, t_max = self._plan, self._token_lanes, self._plan.t_max
        last = self._units[plan.last_stage]
        rpe = self._units[-1] if plan.has_rpe else None
        token = Signal(range(max(self._tokens, 2)))
        chunk = Signal(range(max(self._token_chunks, 2)))
        done, issued = Signal(), Signal()
        # a chunk not taken is offered again: the maps read its token again, nothing moves
        stall = Signal()
        m.d.comb += stall.eq(issued & self.token_stall)
        maps = self.map_unit
        # the maps' words of the token issued: read from the maps on chip, or with the maps
        # in DDR the words taken ahead (two a token, the last stage's and the RPE's), held
        # from the token's first chunk on
        self._tokens_read, self._tokens_map_wait = Signal(), Signal()
        ready = Const(1)
        if maps is None:
            address = Mux(stall, self.token_index, token)
            m.d.comb += last.map_address.eq(address)
            if rpe is not None:
                m.d.comb += rpe.map_address.eq(address)
            last_word = last.map_data
            rpe_word = rpe.map_data if rpe is not None else None
        else:
            active = Signal(name="tokens_active")
            ready, take, last_word, rpe_word = self._token_words(m, plan, rpe is not None,
                                                                 active)
        start = go & ~self.hold_tokens
        if maps is not None:
            start = start & ~maps.pending
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.tokens_waiting.eq(go & self.hold_tokens)
                if maps is not None:
                    m.d.comb += [self._tokens_read.eq(start),
                                 self._tokens_map_wait.eq(go & ~self.hold_tokens
                                                          & maps.pending)]
                with m.If(start):
                    m.next = "TOKENS"
            with m.State("TOKENS"):
                go_on = ~stall & ((chunk != 0) | ready)
                if maps is not None:
                    m.d.comb += active.eq(1)
                    m.d.comb += take.eq(go_on & (chunk == 0))
                    with m.If(~stall & ~go_on):
                        m.d.comb += self._tokens_map_wait.eq(1)
                        m.d.sync += issued.eq(0)
                with m.If(go_on):
                    m.d.sync += [issued.eq(1), self.token_index.eq(token),
                                 self.token_chunk.eq(chunk), self.token_step.eq(step),
                                 chunk.eq(Mux(chunk == self._token_chunks - 1, 0, chunk + 1))]
                    with m.If(chunk == self._token_chunks - 1):
                        m.d.sync += token.eq(token + 1)
                        with m.If(token == self._tokens - 1):
                            m.d.sync += token.eq(0)
                            m.next = "TAIL"
            with m.State("TAIL"):
                with m.If(~stall):
                    m.d.sync += issued.eq(0)
                    m.d.comb += done.eq(1)
                    m.next = "IDLE"
        # the masks of the last stage and the RPE at this step: a masked one hands on zeros
        last_on, rpe_on = Signal(), Signal()
        m.d.comb += [last_on.eq(held.bit_select(plan.last_stage * t_max + self.token_step, 1)),
                     rpe_on.eq(held.bit_select((len(plan.stages) - 1) * t_max
                                               + self.token_step, 1))]
        if self._writable:
            m.submodules.stream_spike = self._stream_ram
            port = self._stream_ram.read_port(domain="comb")
            m.d.comb += port.addr.eq(self.token_chunk)
            value = data.View(data.ArrayLayout(signed(self._stream_bits), lanes), port.data)
        else:
            value = _stream_table(self._stream_spike, lanes, self._stream_bits,
                                  self.token_chunk)
        # the maps' words padded to whole token chunks (the stem's chunks may be other)
        # (signals: each lane reads them, and an expression would be a select a lane)
        padding = Const(0, self._token_chunks * lanes)
        spikes, echoes = Signal(lanes, name="token_spikes"), Signal(lanes, name="token_echoes")
        m.d.comb += spikes.eq(Cat(last_word, padding).word_select(self.token_chunk, lanes))
        if rpe is not None:
            m.d.comb += echoes.eq(Cat(rpe_word, padding).word_select(self.token_chunk,
                                                                      lanes))
        m.d.comb += self.token_valid.eq(issued)
        for lane in range(lanes):
            m.d.comb += self.token_data[lane].eq(
                Mux(spikes[lane] & last_on, value[lane], 0)
                + Mux(echoes[lane] & rpe_on & plan.has_rpe, value[lane], 0))
        return done


    def _token_words(self, m: Module, plan: StemPlan, has_rpe: bool, active: Signal):
        """Take each token's map words from DDR ahead of it; return what the loop needs.

        ``active``: the tokens pass runs (the words are its). Returns ``ready`` (the next
        token's words are here), ``take`` (to drive: its first
        chunk is issued, so they become the held ones), and the held words of the last
        stage and the RPE (``None`` without one), as the maps on chip would give them.
        """
        maps = self.map_unit
        wanted = 2 if has_rpe else 1
        last_index = plan.last_stage
        width = plan.chunks(last_index) * plan.lanes
        ahead = [Signal(width, name=f"token_word_ahead{i}") for i in range(wanted)]
        held = [Signal(width, name=f"token_word{i}") for i in range(wanted)]
        count = Signal(range(wanted + 1))
        ready, take = Signal(), Signal()
        m.d.comb += ready.eq(count == wanted)
        with m.If(active & maps.word_valid & ~ready):
            m.d.comb += maps.word_take.eq(1)
            m.d.sync += count.eq(count + 1)
            for index, word in enumerate(ahead):
                with m.If(count == index):
                    m.d.sync += word.eq(dense_word(maps.word_data, maps.layout, plan,
                                                   last_index))
        with m.If(take):
            m.d.sync += [count.eq(0), *(h.eq(a) for h, a in zip(held, ahead))]
        return ready, take, held[0], held[1] if has_rpe else None


def tap_memory_name(tap: int) -> str:
    """Return the weight-image name of the stem's tap memory ``tap``."""
    return f"{STEM_TAP_PREFIX}{tap}"


def lif_depth(plan: StemPlan) -> int:
    """Return the words of the stem's biases (and thresholds) RAM: every module's chunks."""
    return sum(plan.chunks(index) for index in range(len(plan.stages)))


def lif_bases(plan: StemPlan) -> list[int]:
    """Return each module's first word in the biases and thresholds RAMs (modules in order)."""
    return [sum(plan.chunks(before) for before in range(index))
            for index in range(len(plan.stages))]


def stream_words(values: np.ndarray, lanes: int, bits: int) -> list[int]:
    """Return the stream spike values ``E``, ``lanes`` a word (zero past the width).

    Lane 0 in the low bits, two's complement: the core's ``stream_spike`` words
    (``CorePlan.stream_spike_words``) at the core's lanes.
    """
    padded = np.zeros(-(-len(values) // lanes) * lanes, dtype=np.int64)
    padded[:len(values)] = values
    return [sum((int(v) & ((1 << bits) - 1)) << (bits * lane)
                for lane, v in enumerate(padded[start:start + lanes]))
            for start in range(0, len(padded), lanes)]


def _stream_table(values: np.ndarray, lanes: int, bits: int, chunk: Signal) -> data.View:
    """Return chunk ``chunk`` of the stream spike values ``E`` (zero past the width)."""
    words = stream_words(values, lanes, bits)
    return data.View(data.ArrayLayout(signed(bits), lanes),
                     Array(Const(word, unsigned(bits * lanes)) for word in words)[chunk])


__all__ = ["COUNT_BITS", "STEM_BIASES", "STEM_TAP_PREFIX", "STEM_THRESHOLDS", "STREAM_SPIKE",
           "StemEngine", "lif_bases", "lif_depth", "stream_words", "tap_memory_name"]
