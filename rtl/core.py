"""The compute core: the whole network of SPEC.md section 3 on ``lanes`` accumulator lanes.

A four-stage pipeline, fed one event per cycle and never stalled (each stage's memory
reads are issued by the stage before it):

- **walk** (:class:`~stepvit.rtl.walk_stage.WalkStage`, the sequencer's walk): steps
  through each pass of :class:`~stepvit.rtl.core_plan.CorePlan` the control FSM starts
  and, for each group and chunk, walks the set bits of the input spike word with a
  :class:`~stepvit.rtl.spike_walker.SpikeWalker`; each set bit is one event that addresses
  a weight word (or a KV row). A chunk with no input spike is one event that only closes
  the chunk (its LIF still charges with the bias and leaks). Masked steps are skipped
  before they cost a cycle. The next spike word is prefetched, so chunks follow each other
  without a bubble. *Parallel heads*: when two or more whole heads fit in the lanes
  (``CoreGeometry.parallel_heads``), the attention's KV and Q·KV passes walk the heads of
  a chunk side by side, one walker each; an event then carries one bit per walker that
  has one left, and the chunk ends when every walker has walked its last bit.
- **accumulate** (:class:`~stepvit.rtl.accumulate_stage.AccumulateStage`): the event's
  weights (``lanes`` of them, shifted by the bit plane in the embedding) are added by
  :class:`~stepvit.rtl.accumulator.AccumulatorLanes`, a chunk's sum starting from its
  biases (read with the weights); the KV pass instead adds the token's
  V segment into a KV row here (read-modify-write). With parallel heads each walker has its
  own KV memory (its heads' rows) and its own ``head_dim`` lanes of the chunk, which add
  only when that walker has a bit.
- **sum** (:class:`~stepvit.rtl.sum_stage.SumStage`): a finished chunk gets its operand
  (embedding current or residual stream) and is stored (embedding current, residual
  stream) or added into the logits, or goes on to
- **fire** (:class:`~stepvit.rtl.fire_stage.FireStage`): :class:`~stepvit.rtl.lif.LIFLanes`
  (spikes into a spike map, membranes back, spikes counted).

Every pass drains the pipeline before the next begins (the next reads what it wrote).
No multiplier: addresses advance by adding strides, words are picked by multiplexers
(a dynamic ``word_select`` would be a ``$mul``), and products of a pixel and a weight are
shifts of the weight over the pixel's bit planes.

The memories are in :mod:`~stepvit.rtl.core_memories`. Each stage is a component that
touches only its signature; :class:`StepvitCore` holds the run (the pass descriptor, the
masks), the control FSM that steps through the passes and takes the argmax, and the
connections of the stages to the memories and to each other (``_connect_prefetch``,
``_connect_walk``, ``_connect_accumulate``, ``_connect_sums``, ``_connect_fire``).
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort

from stepvit.model.export import Export
from stepvit.rtl.accumulate_stage import AccumulateStage
from stepvit.rtl.axi_arbiter import AxiReadArbiter
from stepvit.rtl.axi_reader import (
    AXI_READ_MEMBERS,
    connect_axi,
    connect_axi_read,
    read_channels,
)
from stepvit.rtl.axi_writer import AXI_WRITE_MEMBERS
from stepvit.rtl.core_memories import CoreMemories, add_core_memories
from stepvit.rtl.core_pipeline import RunState, select
from stepvit.rtl.core_plan import CorePlan, Operand, Sink
from stepvit.rtl.design_image import HEAD_BIAS, image_memories
from stepvit.rtl.fire_stage import FireStage
from stepvit.rtl.interface import core_signature
from stepvit.rtl.patch_loader import PatchLoader
from stepvit.rtl.prefetch import SpikeWordPrefetch
from stepvit.rtl.protocol import registers_for
from stepvit.rtl.ram_style import ram_attrs
from stepvit.rtl.stem_front import StemFront
from stepvit.rtl.stem_map_ddr import map_layout
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.stem_tiles import stem_tiles
from stepvit.rtl.stream_ddr import StreamDdr
from stepvit.rtl.sum_stage import SumStage
from stepvit.rtl.tables import row_table, table
from stepvit.rtl.tile_buffer import TileBuffer, TileFetch, tile_sequence, weight_tiles
from stepvit.rtl.walk_stage import WalkStage
from stepvit.rtl.weight_loader import connect_write_port

#: Cycles after the last event of a pass until everything is written (the accumulate, sum
#: and fire stages); the next pass's descriptor is loaded in the cycle after.
DRAIN_CYCLES = 3


class StepvitCore(wiring.Component):
    """The network of ``export`` on ``lanes`` parallel accumulator lanes.

    Parameters
    ----------
    export : Export
        The validated export: shapes, widths, weights (memory contents) and thresholds.
    lanes : int
        Output channels computed in parallel, at most the widest output row; a layer's
        last chunk may be ragged and a chunk may span several heads (walked one at a
        time, or side by side when the lanes hold two or more whole heads).
    stem_lanes : int, optional
        Output channels the stem engine computes per event (default ``lanes``); only with
        a convolutional stem.
    stem_chunk_major : bool
        Run the stem module by module, chunk by chunk, every step inside
        (:class:`~stepvit.rtl.stem_plan.StemPlan`): one chunk's conv banks and membranes;
        default ``False`` (step by step). With ``"ddr"`` the image holds the tap words in
        that order (:func:`~stepvit.rtl.design_image.stem_plan_of`).
    weights : str
        ``"rom"``: the parameter memories are ROMs holding the export's values; ``"ddr"``:
        RAMs with no contents (and the head's biases a register) written through the
        ``parameters`` input by a weight loader, so the core depends only on the export's
        shape (a convolutional stem's parameters too: ``rtl/design_image.py``).
    tile_words : int, optional
        The most weight words one pass may read: longer weight passes are split
        (:class:`~stepvit.rtl.core_plan.CorePlan`); ``None`` (default): no limit. With
        ``stream_weights``, the words of a tile: each bank of the tile buffer holds the
        largest.
    stream_weights : bool
        ``"ddr"`` only: keep no weight memory; stream each weight pass's words (its
        *tile*) from the weights region of the image in DDR into a double-buffered
        :class:`~stepvit.rtl.tile_buffer.TileBuffer` while the pass before computes, and
        wait at a pass whose tile has not arrived (``weight_stalls`` counts those cycles).
        The loader still reads the whole image (its checksum covers the weights).
    data_width, max_burst : int
        ``stream_weights`` only: the AXI beat's bits and the longest burst (the loader's).
    spike_word_bits : int, optional
        The widest word of a spike map and of the walk: a token's spikes wider than that
        are held as several words (segments), each walked in turn for every output chunk
        (:class:`~stepvit.rtl.core_plan.CoreGeometry`). The logic that holds, selects or
        walks a word then grows with this width rather than the widest layer's; a word
        (segment) with no spike costs a cycle. ``None`` (default): a word a token.
    stream_ddr : bool
        Keep the residual stream in DDR, not in a buffer on chip
        (:class:`~stepvit.rtl.stream_ddr.StreamDdr`, through the ``act_*`` AXI channels at
        ``activations_base``): each pass reads it ahead through a FIFO and writes it
        behind one, and the walk waits at a closing whose word has not arrived or whose
        write has no room (``stream_stalls``). Needs one stream buffer (no stem, or a
        chunk-major one).
    stream_fifo_words : int, optional
        ``stream_ddr`` only: the read FIFO's words (default: enough to hide the latency).
    stem_maps_ddr : bool
        With ``stream_ddr`` and a chunk-major stem whose taps stream: keep the stem's
        emitted maps in the activation buffer too, after the stream, from
        :attr:`maps_offset` (:mod:`stepvit.rtl.stem_map_ddr`): the maps' reads are the
        arbiter's last reader on the tiles' port, their writes go through the stream's
        write FIFO, and ``stem_map_stalls`` counts the cycles the stem waited for them.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed (:func:`stepvit.rtl.sizing.place_ultraram`,
        :func:`stepvit.rtl.sizing.place_distributed`, by its names): each is marked
        ``ram_style`` ``"ultra"`` (UltraRAM) or ``"distributed"`` (LUTs)
        (:mod:`stepvit.rtl.ram_style`). Default: none.

    Members
    -------
    See :func:`stepvit.rtl.interface.core_signature`.
    """

    def __init__(self, export: Export, *, lanes: int, stem_lanes: int | None = None,
                 stem_chunk_major: bool = False, weights: str = "rom",
                 tile_words: int | None = None, stream_weights: bool = False,
                 data_width: int = 64,
                 max_burst: int = 16, spike_word_bits: int | None = None,
                 stream_ddr: bool = False, stream_fifo_words: int | None = None,
                 ram_styles: Mapping[str, str] | None = None,
                 stem_maps_ddr: bool = False) -> None:
        registers_for(weights)  # refuses a mode that is not one
        if stream_weights and weights != "ddr":
            raise ValueError("stream_weights needs weights='ddr'")
        self.weights = weights
        self.stream_weights = stream_weights
        # a ddr core must not depend on the export's values: its plan has none
        self.plan = CorePlan(export, lanes=lanes, contents=weights == "rom",
                             tile_words=tile_words, spike_word_bits=spike_word_bits,
                             stem_chunk_major=stem_chunk_major)
        self._head_in_layer = export.layer_names().index("head.in")
        self._stem_plan = (StemPlan.from_export(export, lanes=stem_lanes or lanes,
                                                chunk_major=stem_chunk_major)
                           if self.plan.geometry.stem_modules else None)
        self.parameter_memories = (image_memories(self.plan, self._stem_plan)
                                   if weights == "ddr" else None)
        self._export = export
        self.tiles = None
        #: A chunk-major stem's tiles, when the core streams its weights (else None): the
        #: stem keeps no tap memory either (:mod:`stepvit.rtl.stem_tiles`).
        self.stem_tiles = None
        #: The stem's front (:class:`~stepvit.rtl.stem_front.StemFront`) of the latest
        #: elaboration, for probes in simulation; None without a stem or before one.
        self.stem_front: StemFront | None = None
        self._data_width, self._max_burst = data_width, max_burst
        self._ram_styles = dict(ram_styles or {})
        if stream_weights and stem_chunk_major and self._stem_plan is not None:
            self.stem_tiles = stem_tiles(self._stem_plan, self.parameter_memories, data_width)
        if stream_weights:
            self.tiles = weight_tiles(self.plan, self.parameter_memories, data_width)
            self._tile_buffer = TileBuffer(
                data_width=data_width, word_width=self.tiles.word_bytes * 8,
                depth=max(self.tiles.depth, 1), max_burst=max_burst,
                attrs=ram_attrs(ram_styles, "tile_banks"))
        tile_axi = (None if self.tiles is None else
                    {name: self._tile_buffer.signature.members[name]
                     for name in AXI_READ_MEMBERS})
        if stem_maps_ddr and not (stream_ddr and self._stem_plan is not None
                                  and stem_chunk_major):
            raise ValueError("stem_maps_ddr needs a chunk-major stem (stem_chunk_major) and "
                             "the stream in DDR (stream_ddr)")
        self.stem_maps_ddr = stem_maps_ddr
        #: The stream's DDR unit (``stream_ddr``), else None.
        self.stream_unit: StreamDdr | None = None
        stream_axi = None
        if stream_ddr:
            if self.plan.geometry.stream_buffers != 1:
                raise ValueError("stream_ddr needs one stream buffer: a stem design must "
                                 "be chunk-major (stem_chunk_major=True)")
            self.stream_unit = StreamDdr(plan=self.plan, data_width=data_width,
                                         max_burst=max_burst,
                                         read_fifo_words=stream_fifo_words,
                                         maps=stem_maps_ddr)
            # with streamed weights its reads share the tiles' port (the arbiter's last
            # reader); else they have their own
            members = self.stream_unit.signature.members
            names = (AXI_WRITE_MEMBERS if stream_weights
                     else (*read_channels(32, data_width), *AXI_WRITE_MEMBERS))
            stream_axi = {name: members[name] for name in names}
        super().__init__(core_signature(export, self.parameter_memories, tile_axi,
                                        stream_axi))

    def elaborate(self, platform: object) -> Module:
        """Build the memories and the stages, and wire them to the run and its control FSM."""
        m = Module()
        ddr = self.weights == "ddr"
        unit = self.stream_unit
        memories = add_core_memories(m, self.plan, writable=ddr, streamed=self.stream_weights,
                                     stream_ddr=unit is not None, ram_styles=self._ram_styles)
        if unit is not None:
            m.submodules.stream_ddr = unit
        # the tile buffer's reads, the stem's tap tiles' and the stream's share the port
        readers = self._readers()
        if len(readers) > 1:
            m.submodules.arbiter = self._arbiter = AxiReadArbiter(
                readers=len(readers), data_width=self._data_width)
            connect_axi_read(m, self._arbiter, lambda name: getattr(self, f"tile_{name}"))
        if len(self._act_readers()) > 1:
            m.submodules.act_arbiter = self._act_arbiter = AxiReadArbiter(
                readers=len(self._act_readers()), data_width=self._data_width)
            connect_axi_read(m, self._act_arbiter, lambda name: getattr(self, f"act_{name}"))
        tiles = self._add_tiles(m) if self.stream_weights else None
        m.submodules.accumulate = accumulate = AccumulateStage(plan=self.plan)
        m.submodules.sums = sums = SumStage(plan=self.plan, head_bias_input=ddr)
        if ddr:
            self._connect_parameters(m, memories, sums)
        m.submodules.fire = fire = FireStage(plan=self.plan, layers=len(self.spike_counts),
                                             head_in_layer=self._head_in_layer)
        m.submodules.prefetch = prefetch = SpikeWordPrefetch(
            plan=self.plan, spike_map_widths=memories.buffer_widths)
        m.submodules.walk = walk = WalkStage(plan=self.plan)
        run = self._run_state(m, sums, fire)
        if self._stem_plan is None:
            stem = None
            start_bank = self._load_patches(m, memories)
        else:
            stem, start_bank = self._load_stem(m), Const(0)
            if ddr:
                self._connect_stem_parameters(m, stem)
            if self.stem_tiles is not None:
                self._share_tiles(m, stem, tiles)
        self._control(m, run, prefetch, walk, start_bank, stem, tiles)
        if unit is not None:
            self._connect_stream(m, run, walk, unit)
        if self.stem_maps_ddr:
            self._connect_stem_maps(m, stem, unit, run)
        self._connect_prefetch(m, memories, run, prefetch, fire)
        self._connect_walk(m, memories, run, prefetch, walk, tiles)
        self._connect_accumulate(m, memories, run, walk, accumulate, tiles)
        self._connect_sums(m, memories, run, accumulate, sums, stem)
        self._connect_fire(m, memories, run, sums, fire, stem)
        return m

    def _connect_parameters(self, m: Module, memories: CoreMemories, sums: SumStage) -> None:
        """Drive the parameter RAMs' write ports and the head's bias register from the loader."""
        for name, port in memories.parameter_writes.items():
            connect_write_port(m, getattr(self.parameters, name), port)
        head_bias = getattr(self.parameters, HEAD_BIAS)
        held = Signal(len(head_bias.write_data), name="head_bias")
        with m.If(head_bias.write_en):
            m.d.sync += held.eq(head_bias.write_data)
        m.d.comb += sums.head_bias.as_value().eq(held)

    def _connect_stem_parameters(self, m: Module, stem: StemFront) -> None:
        """Drive the stem engine's parameter RAMs from the loader.

        Its copy of the spike values is written by the core's ``stream_spike`` port too.
        """
        for name, port in stem.parameter_writes.items():
            connect_write_port(m, getattr(self.parameters, name), port)

    def _share_tiles(self, m: Module, stem: StemFront, tiles: TileFetch) -> None:
        """Give the stem's tile buffer the arbiter's reader 1; share the fetch's signals.

        The core's tiles and the stem's fetch at once (the stem of the next image overlaps
        the blocks of this one): the arbiter (:class:`~stepvit.rtl.axi_arbiter.AxiReadArbiter`,
        made in :meth:`elaborate`) grants ``tile_*`` a burst at a time. Both fetches stop
        with ``tiles_enable``; ``tiles_idle`` waits for both; ``stem_weight_stalls`` counts
        the cycles a stem scatter waits for its tile (apart from the core's
        ``weight_stalls``: the two waits overlap in time).
        """
        buffer, arbiter = stem.tile_buffer, self._arbiter
        connect_axi_read(m, buffer, lambda name: arbiter.port(1, name))
        m.d.comb += [buffer.weights_base.eq(self.weights_base),
                     buffer.enable.eq(self.tiles_enable),
                     self.tiles_idle.eq(~tiles.buffer.fetching & buffer.idle
                                        & self._stream_reads_done())]
        with m.If(buffer.waiting):
            m.d.sync += self.stem_weight_stalls.eq(self.stem_weight_stalls + 1)

    def _readers(self) -> list[str]:
        """Return the readers of the ``tile_*`` port, in the arbiter's order (else one).

        The core's tile buffer; the stem's tap tiles (a chunk-major stem that streams
        them); the stream's reads (its DDR unit, with streamed weights).
        """
        if not self.stream_weights:
            return []
        return (["tiles"] + (["stem_tiles"] if self.stem_tiles is not None else [])
                + (["stream"] if self.stream_unit is not None else [])
                + (["stem_maps"] if self.stem_maps_ddr else []))

    def _stream_reads_done(self) -> Value:
        """Return whether no stream read is under way on the ``tile_*`` port.

        (Then the top may give the port to the weight loader.)
        """
        if self.stream_unit is None or not self.stream_weights:
            return Const(1)
        if self.stem_maps_ddr and self.stem_front is not None:
            # (the stem's front is made after the core's tiles; its tiles' share says it)
            return self.stream_unit.reads_done & self.stem_front.map_unit.reads_done
        return self.stream_unit.reads_done

    def _add_tiles(self, m: Module) -> TileFetch:
        """Add the tile buffer and the fetch of the tiles, in pass order, round and round.

        While ``tiles_enable`` is high the buffer fetches the next tile the masks need
        whenever its free bank is empty (the one after the tile the core computes with); a
        tile whose pass the live masks leave out (its module masked at every step; the
        embedding's is always needed) is skipped, so it costs no traffic. The fetch is a
        prediction: the core takes the filled bank only if its tag is the tile its pass
        wants, and otherwise discards it and seeks that tile (:meth:`_control`), so a
        wrong prediction (the masks changed since the fetch) costs cycles, never a wrong
        result. Low ``tiles_enable`` stops the fetch after the one under way; the next tile
        is the first again.
        """
        tiles, plan = self.tiles, self.plan
        m.submodules.tiles = buffer = self._tile_buffer
        # beside a streamed stem, the arbiter's reader 0 (:meth:`_share_tiles`)
        connect_axi_read(m, buffer, (lambda name: self._arbiter.port(0, name))
                         if len(self._readers()) > 1
                         else (lambda name: getattr(self, f"tile_{name}")))
        count = len(tiles.offsets)
        seek, seek_tile = Signal(), Signal(range(max(count, 2)))
        # which tiles the live masks need: the embedding's always; others if their
        # module runs at some step
        needed = Cat(*(Const(1) if descriptor.get("once") and not descriptor.get("count_planes")
                       else self.masks[descriptor.get("module", 0)].any()
                       for descriptor in (plan.passes[p] for p in tiles.passes)))
        sequence = tile_sequence(m, count=count, needed=needed, enable=self.tiles_enable,
                                 free=~buffer.fetching & ~buffer.filled, seek=seek,
                                 seek_tile=seek_tile)
        next_tile, tag = sequence.next_tile, sequence.tag
        m.d.comb += [
            buffer.base.eq(self.weights_base + table(m, tiles.offsets, next_tile,
                                                     name="tile_offset")),
            buffer.words.eq(table(m, tiles.words, next_tile, name="tile_words")),
            buffer.fetch.eq(sequence.fetch),
            self.tiles_idle.eq(~buffer.fetching & self._stream_reads_done()),
        ]
        discard = Signal()
        m.d.comb += buffer.clear.eq(~self.tiles_enable | discard)
        return TileFetch(buffer=buffer, tag=tag, next_tile=next_tile, seek=seek,
                         seek_tile=seek_tile, discard=discard)

    # --- run state ---------------------------------------------------------------------
    def _run_state(self, m: Module, sums: SumStage, fire: FireStage) -> RunState:
        """Make the state of a run; drive the logits and spike counts from the stages'."""
        plan, geometry = self.plan, self.plan.geometry
        masks = Signal.like(self.masks)
        descriptor = Signal(plan.layout(), name="desc")
        pass_index = Signal(range(len(plan.passes) + 1))
        step_mask = Signal(geometry.t_max)
        module_mask = select(m, [masks[i] for i in range(len(masks))], descriptor.module)
        # The head's counts have as many bit planes as its active steps times the tokens
        # need (none when the head is masked throughout): a masked step costs no plane.
        head_steps = sum(masks[len(masks) - 1][t] for t in range(geometry.t_max))
        head_planes = select(m, [Const((steps * geometry.tokens).bit_length(),
                                        range(geometry.count_bits + 1))
                                  for steps in range(geometry.t_max + 1)], head_steps)
        m.d.comb += step_mask.eq(Mux(descriptor.once,
                                     Mux(descriptor.count_planes, head_planes != 0, 1),
                                     module_mask))
        logits = [sums.logits[k] for k in range(geometry.class_chunks * geometry.lanes)]
        for k in range(geometry.num_classes):
            m.d.comb += self.logits[k].eq(logits[k])
        # the stem's layers count in the stem engine (``_load_stem``)
        for i in range(geometry.stem_modules, len(self.spike_counts)):
            m.d.comb += self.spike_counts[i].eq(fire.counts[i])
        return RunState(masks=masks, descriptor=descriptor, pass_index=pass_index,
                        step_mask=step_mask, logits=logits, begin=Signal(name="run_begin"),
                        bank=Signal(name="run_bank"), head_planes=head_planes)

    def _load_patches(self, m: Module, memories: CoreMemories) -> Signal:
        """Add the pixel loader (image words in, patch bit planes out) and its two banks.

        ``load`` fills the bank after the last one loaded, independently of the run, so
        the next image loads while this one computes. Returns the bank the next ``start``
        computes from.
        """
        geometry = self.plan.geometry
        m.submodules.loader = loader = PatchLoader(image_shape=geometry.image_shape,
                                                   patch=geometry.patch)
        load_bank, start_bank = Signal(), Signal()
        m.d.comb += [
            loader.start.eq(self.load), self.loaded.eq(loader.done),
            self.img_addr.eq(loader.img_addr), loader.img_data.eq(self.img_data),
        ]
        for bank, port in enumerate(memories.patch_write):
            m.d.comb += [port.addr.eq(loader.patch_addr), port.data.eq(loader.patch_data),
                         port.en.eq(Mux(load_bank == bank, loader.patch_enable, 0))]
        with m.If(loader.done):
            m.d.sync += load_bank.eq(~load_bank)
        with m.If(self.start):
            m.d.sync += start_bank.eq(~start_bank)
        return start_bank

    def _load_stem(self, m: Module) -> StemFront:
        """Add the stem's front (loader, engine, hand-off); take its tokens and spike counts.

        The front writes each image's stream into the buffer the blocks do not use, so the
        stem of the next image overlaps the blocks of this one; with one buffer (a
        chunk-major stem) its layers overlap them and its tokens wait for them
        (:meth:`_control` drives ``blocks_busy``).
        """
        geometry = self.plan.geometry
        m.submodules.stem = stem = StemFront(
            self._export, self._stem_plan, token_lanes=geometry.lanes,
            stream_words=geometry.t_max * geometry.tokens * geometry.dim_chunks,
            writable=self.weights == "ddr", tiles=self.stem_tiles,
            data_width=self._data_width, max_burst=self._max_burst,
            buffers=geometry.stream_buffers, ram_styles=self._ram_styles,
            maps_ddr=self.stem_maps_ddr)
        self.stem_front = stem
        m.d.comb += [
            stem.load.eq(self.load), self.loaded.eq(stem.loaded),
            self.img_addr.eq(stem.img_addr), stem.img_data.eq(self.img_data),
            stem.mask.eq(self.masks.as_value()[:geometry.stem_modules * geometry.t_max]),
        ]
        for i in range(geometry.stem_modules):
            m.d.comb += self.spike_counts[i].eq(stem.counts[i])
        return stem

    # --- control FSM --------------------------------------------------------------------
    def _control(self, m: Module, run: RunState, prefetch: SpikeWordPrefetch, walk: WalkStage,
                 start_bank: Value, stem: StemFront | None, tiles: TileFetch | None) -> None:
        """Run every pass of a loaded image (prefetch, prime, walk, drain), take the argmax.

        With a stem, the image's stream comes from the stem's front: the run waits until it
        is ready and takes it. With streamed weights, a pass that runs and reads weights
        first takes its tile from the tile buffer (at once if it has arrived, else waiting
        in ``TILE``: :meth:`_take_tile`); a pass the masks skip takes none. With the stream
        in DDR a pass opens its reads as it begins, its walk waits for them
        (:meth:`_stream_hold`), and the next pass begins only when its writes are
        acknowledged.
        """
        plan = self.plan
        layout = plan.layout()
        # the next pass's descriptor, one table read once (rtl/tables.py)
        next_pass = table(m, plan.pass_words(), run.pass_index, name="pass_rom",
                          width=layout.size)
        pass_tile = None
        if tiles is not None:
            # each pass's tile, if it has one (both states that take a tile read it)
            tile_of = {p: index for index, p in enumerate(self.tiles.passes)}
            pass_tile = row_table(m, [{"tile": tile_of.get(p, 0), "has": int(p in tile_of)}
                                      for p in range(len(plan.passes))],
                                  run.pass_index, name="pass_tile")
        drain = Signal(range(DRAIN_CYCLES + 1))
        best = Signal(range(max(plan.geometry.num_classes, 2)))
        scan = Signal(range(plan.geometry.num_classes + 1))
        m.d.sync += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    self._start_run(m, run, start_bank)
                    if stem is None:
                        m.next = "NEXT"
                    else:
                        m.next = "STEM"
            writes_done = Const(1) if self.stream_unit is None else self.stream_unit.writes_done
            if stem is not None:
                with m.State("STEM"):
                    with m.If(stem.ready & writes_done):
                        m.d.comb += stem.take.eq(1)
                        m.next = "NEXT"
            with m.State("PREFETCH"):
                m.d.comb += [prefetch.first.eq(1), walk.restart.eq(1)]
                with m.If(prefetch.found):
                    if self.stream_unit is not None:
                        m.d.comb += self.stream_unit.open.eq(1)
                    if tiles is None:
                        m.next = "PRIME"
                    else:
                        self._take_tile(m, tiles, pass_tile, waiting=False)
                with m.Else():
                    m.d.sync += run.pass_index.eq(run.pass_index + 1)
                    m.next = "NEXT"
            with m.State("PRIME"):
                m.d.comb += walk.prime.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                hold = self.walk_hold | self._stream_hold(walk, run)
                m.d.comb += [walk.run.eq(1), walk.hold.eq(hold), self.walk_held.eq(hold)]
                with m.If(walk.pass_done):
                    m.d.sync += [drain.eq(0), run.pass_index.eq(run.pass_index + 1)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == DRAIN_CYCLES - 1):
                    m.next = "NEXT"
            with m.State("NEXT"):
                if self.stream_unit is not None:
                    # the pass's reads all taken (checked) and its writes acknowledged
                    m.d.comb += self.stream_unit.close.eq(1)
                with m.If(writes_done & (run.pass_index == len(plan.passes))):
                    m.d.sync += [best.eq(0), scan.eq(1)]
                    m.next = "ARGMAX"
                with m.Elif(writes_done):
                    m.d.sync += run.descriptor.eq(next_pass)
                    m.next = "PREFETCH"
            if tiles is not None:
                with m.State("TILE"):
                    self._take_tile(m, tiles, pass_tile, waiting=True)
            with m.State("ARGMAX"):
                self._argmax_cycle(m, run, best, scan)
        if stem is not None:
            # one stream buffer: the blocks use it from the take to the image's end
            m.d.comb += stem.blocks_busy.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("STEM"))

    def _stream_hold(self, walk: WalkStage, run: RunState) -> Value:
        """Return whether the walk waits for the stream in DDR at this cycle's event.

        An event that closes a chunk of a pass that reads the stream needs a word in the
        read FIFO besides those promised; of a pass that writes it, room in the write FIFO
        besides the writes promised (:class:`~stepvit.rtl.stream_ddr.StreamDdr`).
        """
        unit = self.stream_unit
        if unit is None:
            return Const(0)
        reads, writes = self._stream_traffic(run)
        return walk.closes & ((reads & ~unit.read_credit) | (writes & ~unit.write_credit))

    @staticmethod
    def _stream_traffic(run: RunState) -> tuple[Value, Value]:
        """Return whether the pass reads the stream (its operand) and writes it."""
        desc = run.descriptor
        return (desc.operand == Operand.STREAM,
                (desc.sink == Sink.STORE_STREAM) | desc.to_stream)

    def _connect_stream(self, m: Module, run: RunState, walk: WalkStage,
                        unit: StreamDdr) -> None:
        """Give the stream's DDR unit the pass, the walk's promises and the AXI ports.

        A pass opens with its step mask and its slice of chunks: a storing slice of a split
        layer closes chunks ``chunk_offset ...`` of each token, a LIF pass its own (the
        walk's first group index, :meth:`WalkStage._first_index`).
        """
        desc = run.descriptor
        reads, writes = self._stream_traffic(run)
        issued = walk.run & ~walk.hold & walk.closes
        first = (Mux(desc.sink == Sink.LIF, 0, desc.chunk_offset) if self.plan.split
                 else Const(0))
        m.d.comb += [
            unit.base.eq(self.activations_base),
            unit.reads.eq(reads),
            unit.steps.eq(run.step_mask),
            unit.first.eq(first),
            unit.chunks.eq(desc.chunks),
            unit.promise_read.eq(issued & reads),
            unit.promise_write.eq(issued & writes),
            unit.clear.eq(run.begin),
            self.stream_error.eq(unit.error),
        ]
        with m.If(walk.run & walk.hold & self._stream_hold(walk, run)):
            m.d.sync += self.stream_stalls.eq(self.stream_stalls + 1)
        connect_axi_read(m, unit, self._read_port("stream"))
        connect_axi(m, unit, lambda name: getattr(self, f"act_{name}"), AXI_WRITE_MEMBERS)

    def _act_readers(self) -> list[str]:
        """Return the readers of the ``act_*`` read port, in its arbiter's order (else none).

        Without streamed weights, the stream's reads have that port; the stem's maps in DDR
        share it.
        """
        if self.stream_weights or not self.stem_maps_ddr:
            return []
        return ["stream", "stem_maps"]

    def _read_port(self, reader: str):
        """Return ``name -> signal``: the AXI read port of ``reader`` (an arbiter's, or act_)."""
        readers, act = self._readers(), self._act_readers()
        if reader in readers and len(readers) > 1:
            return lambda name: self._arbiter.port(readers.index(reader), name)
        if reader in act:
            return lambda name: self._act_arbiter.port(act.index(reader), name)
        return lambda name: getattr(self, f"act_{name}")

    @property
    def maps_offset(self) -> int:
        """Return the stem maps' byte offset in the activation buffer (after the stream).

        The stream's bytes rounded up to 4 KB; 0 without a stream in DDR.
        """
        unit = self.stream_unit
        if unit is None:
            return 0
        return -(-unit.words * unit.word_bytes // 4096) * 4096

    @property
    def activation_bytes(self) -> int:
        """Return the bytes of the activation buffer: the stream, and the stem's maps."""
        unit = self.stream_unit
        if unit is None:
            return 0
        if not self.stem_maps_ddr:
            return unit.words * unit.word_bytes
        layout = map_layout(self._stem_plan, self._data_width)
        return self.maps_offset + layout.total_bytes

    def _connect_stem_maps(self, m: Module, stem: StemFront, unit: StreamDdr,
                           run: RunState) -> None:
        """Give the stem's maps unit its region, the arbiter's last reader and the writes.

        Its writes enter the stream's write FIFO (``map_*``); its reads wait for their
        answers (``maps_done``); its errors are the stream's; its waits are counted.
        """
        maps = stem.map_unit
        connect_axi_read(m, maps, self._read_port("stem_maps"))
        m.d.comb += [
            maps.base.eq(self.activations_base + self.maps_offset),
            unit.map_valid.eq(maps.map_valid), maps.map_ready.eq(unit.map_ready),
            unit.map_address.eq(maps.map_address), unit.map_data.eq(maps.map_data),
            unit.map_strobe.eq(maps.map_strobe), maps.answered.eq(unit.maps_done),
            maps.clear.eq(run.begin),
            self.stream_error.eq(unit.error | maps.error),
        ]
        with m.If(stem.map_waiting):
            m.d.sync += self.stem_map_stalls.eq(self.stem_map_stalls + 1)

    def _take_tile(self, m: Module, tiles: TileFetch, pass_tile: data.View, *,
                   waiting: bool) -> None:
        """Go on to ``PRIME`` with the pass's tile (a pass without one: at once), or wait.

        The filled bank is the pass's tile if its tag is the pass's tile index: the core
        swaps it in. Otherwise it waits in ``TILE`` (counting ``weight_stalls``): for the
        fetch under way; or, with no fetch under way, it discards a filled bank of another
        tile and seeks its own. ``pass_tile``: the running pass's ``tile`` and whether it
        ``has`` one.
        """
        has_tile, wanted = pass_tile.has, pass_tile.tile
        buffer = tiles.buffer
        ready = buffer.filled & (tiles.tag == wanted)
        with m.If(~has_tile | ready):
            m.d.comb += buffer.swap.eq(has_tile)
            m.next = "PRIME"
        with m.Else():
            m.next = "TILE"
            if waiting:
                m.d.sync += self.weight_stalls.eq(self.weight_stalls + 1)
                # (a fetcher already on its way to the wanted tile is left to fetch it)
                with m.If(~buffer.fetching & (buffer.filled | (tiles.next_tile != wanted))):
                    m.d.comb += [tiles.discard.eq(1), tiles.seek.eq(1),
                                 tiles.seek_tile.eq(wanted)]

    def _start_run(self, m: Module, run: RunState, start_bank: Signal) -> None:
        """Latch the masks and the bank; the stages clear the counts and preset the logits."""
        m.d.comb += run.begin.eq(1)
        m.d.sync += [
            run.masks.eq(self.masks), self.busy.eq(1), run.bank.eq(start_bank),
            run.pass_index.eq(0),
        ]

    def _argmax_cycle(self, m: Module, run: RunState, best: Signal, scan: Signal) -> None:
        """Compare one logit with the best so far; after the last, report and go idle."""
        # The first maximum wins: only a strictly larger logit moves the choice.
        logit_array = Array(run.logits)
        with m.If(scan == self.plan.geometry.num_classes):
            m.d.sync += [self.predicted.eq(best), self.busy.eq(0), self.done.eq(1)]
            m.next = "IDLE"
        with m.Else():
            with m.If(logit_array[scan] > logit_array[best]):
                m.d.sync += best.eq(scan)
            m.d.sync += scan.eq(scan + 1)

    # --- the stages ----------------------------------------------------------------------
    def _connect_prefetch(self, m: Module, memories: CoreMemories, run: RunState,
                          prefetch: SpikeWordPrefetch, fire: FireStage) -> None:
        """Give the prefetch the run, head.in's counts and the spike maps' and patches' reads."""
        m.d.comb += [
            prefetch.descriptor.eq(run.descriptor),
            prefetch.step_mask.eq(run.step_mask),
            prefetch.head_planes.eq(run.head_planes),
            prefetch.bank.eq(run.bank),
        ]
        geometry = self.plan.geometry
        if geometry.counts_in_memory:
            fire_read, prefetch_read = memories.count_reads
            m.d.comb += [fire_read.addr.eq(fire.count_address),
                         fire.count_data.eq(fire_read.data),
                         prefetch_read.addr.eq(prefetch.count_address),
                         prefetch_read.en.eq(prefetch.fetch_enable),
                         prefetch.count_words.eq(prefetch_read.data)]
            _drive_write(m, memories.count_write, fire.count_write)
        else:
            m.d.comb += prefetch.head_counts.eq(fire.head_counts)
        for source, port in memories.buffer_read.items():
            m.d.comb += [port.addr.eq(prefetch.fetch_address), port.en.eq(prefetch.fetch_enable),
                         prefetch.spike_words[source.name.lower()].eq(port.data)]
        for bank, port in enumerate(memories.patch_read):
            m.d.comb += [port.en.eq(prefetch.fetch_enable), port.addr.eq(prefetch.patch_address),
                         prefetch.patch_words[bank].eq(port.data)]

    def _connect_walk(self, m: Module, memories: CoreMemories, run: RunState,
                      prefetch: SpikeWordPrefetch, walk: WalkStage,
                      tiles: TileFetch | None) -> None:
        """Give the walk stage the run and the prefetched words; address its reads.

        With streamed weights the weight word is read from the pass's tile: its address less
        the pass's first word.
        """
        m.d.comb += [
            walk.descriptor.eq(run.descriptor),
            walk.begin.eq(run.begin),
            # the stem writes the stream at every step; the embedding at its active ones
            walk.embedding_steps.eq(-1 if self._stem_plan else self.masks[0]),
            walk.fetched.eq(prefetch.fetched),
            prefetch.advance.eq(walk.advance),
        ]
        m.d.comb += memories.bias_read.addr.eq(walk.bias_address)
        if tiles is None:
            m.d.comb += memories.weight_read.addr.eq(walk.weight_address)
        else:
            m.d.comb += tiles.buffer.read_addr.eq(walk.weight_address - run.descriptor.weight_base)
        for slot, port in enumerate(memories.kv_read):
            m.d.comb += port.addr.eq(walk.kv_address[slot])

    def _connect_accumulate(self, m: Module, memories: CoreMemories, run: RunState,
                            walk: WalkStage, accumulate: AccumulateStage,
                            tiles: TileFetch | None) -> None:
        """Feed the accumulate stage the walk's events and their reads; give it the KV writes."""
        lanes = self.plan.geometry.lanes
        weights = (memories.weight_read.data if tiles is None
                   else tiles.buffer.read_data[:8 * lanes])
        m.d.comb += [
            accumulate.descriptor.eq(run.descriptor),
            accumulate.event.eq(walk.event),
            accumulate.weights.eq(weights),
            memories.current_read.addr.eq(accumulate.current_address),
            *(port.addr.eq(accumulate.stream_address) for port in memories.stream_reads),
            accumulate.bias.eq(memories.bias_read.data),
        ]
        for slot, (read, write) in enumerate(zip(memories.kv_read, memories.kv_write)):
            m.d.comb += accumulate.kv_rows[slot].eq(read.data)
            _drive_write(m, write, accumulate.kv_write[slot])

    def _connect_sums(self, m: Module, memories: CoreMemories, run: RunState,
                      accumulate: AccumulateStage, sums: SumStage,
                      stem: StemFront | None) -> None:
        """Feed the sum stage the closed chunks and their reads; give it the current's writes."""
        lanes = self.plan.geometry.lanes
        m.d.comb += [
            sums.descriptor.eq(run.descriptor),
            sums.preset.eq(run.begin),
            sums.valid.eq(accumulate.valid),
            sums.event.eq(accumulate.closed),
            *(sums.sums[lane].eq(accumulate.sums[lane]) for lane in range(lanes)),
            sums.current.eq(memories.current_read.data),
            # the blocks' stream buffer (with a stem, the one its front handed on last), or
            # the word the stream's DDR unit read ahead, taken as its chunk arrives
            sums.stream.eq(self._stream_read(m, memories, run, sums, stem)),
            memories.membrane_read.addr.eq(sums.membrane_address),
            memories.theta_read.addr.eq(sums.theta_address),
            memories.spike_value_read.addr.eq(sums.spike_value_address),
        ]
        _drive_write(m, memories.current_write, sums.current_write)

    def _stream_read(self, m: Module, memories: CoreMemories, run: RunState, sums: SumStage,
                     stem: StemFront | None) -> Value:
        """Return the stream word the sum stage adds (from the buffer, or from DDR)."""
        unit = self.stream_unit
        if unit is not None:
            m.d.comb += unit.take.eq(sums.valid & self._stream_traffic(run)[0])
            return unit.word_data
        if len(memories.stream_reads) == 1:
            return memories.stream_reads[0].data
        return Mux(stem.buffer, memories.stream_reads[1].data, memories.stream_reads[0].data)

    def _connect_fire(self, m: Module, memories: CoreMemories, run: RunState, sums: SumStage,
                      fire: FireStage, stem: StemFront | None) -> None:
        """Feed the fire stage the charged chunks and their reads; give it its writes.

        The residual stream is written by the sum stage (a stored chunk) or by the fire
        stage (the embedding's spikes), never both in one pass, or by the stem engine's
        tokens before the first pass.
        """
        desc, lanes = run.descriptor, self.plan.geometry.lanes
        m.d.comb += [
            fire.descriptor.eq(desc),
            fire.clear.eq(run.begin),
            fire.valid.eq(sums.fire_valid),
            fire.event.eq(sums.fire_event),
            fire.current.eq(sums.fire_current),
            fire.theta.eq(memories.theta_read.data),
            fire.membrane.eq(memories.membrane_read.data),
            fire.spike_value.eq(memories.spike_value_read.data),
        ]
        _drive_write(m, memories.membrane_write, fire.membrane_write)
        unit = self.stream_unit
        if unit is not None:
            # the sum stage's residual adds and the fire stage's embedding spikes, to DDR;
            # the stem's tokens (never while the blocks run) wait while the writes have no
            # room
            m.d.comb += [
                unit.write_en.eq(fire.stream_write.en | sums.stream_write.en),
                unit.write_index.eq(Mux(fire.stream_write.en, fire.stream_write.addr,
                                        sums.stream_write.addr)),
                unit.write_data.eq(Mux(fire.stream_write.en, fire.stream_write.data,
                                       sums.stream_write.data)),
            ]
            if stem is not None:
                m.d.comb += stem.token_stall.eq(~unit.write_credit)
                with m.If(stem.token_valid):
                    m.d.comb += [unit.write_en.eq(unit.write_credit), unit.direct.eq(1),
                                 unit.write_index.eq(stem.token_address),
                                 unit.write_data.eq(stem.token_data)]
                with m.If(stem.token_valid & ~unit.write_credit):
                    m.d.sync += self.stream_stalls.eq(self.stream_stalls + 1)
        for buffer, port in enumerate(memories.stream_writes):
            with m.If(fire.stream_write.en):
                _drive_write(m, port, fire.stream_write)
            with m.Else():
                _drive_write(m, port, sums.stream_write)
            if stem is not None:
                # the blocks write their buffer; the stem's tokens the other one
                with m.If(stem.token_valid & (stem.token_buffer == buffer)):
                    m.d.comb += [port.addr.eq(stem.token_address),
                                 port.data.eq(stem.token_data), port.en.eq(1)]
                with m.Elif(stem.buffer != buffer):
                    m.d.comb += port.en.eq(0)
        # The fired chunk goes into the target spike map: the chunk's lanes of its word (of
        # the segment that holds them: FireStage.spike_address and spike_chunk). The write
        # enable is a decoder as wide as the word's chunks, not ``1 << spike_chunk``, whose
        # shift is 2**len(spike_chunk) bits wide (65,536 at 8 lanes of Spikformer-4-384) and
        # whose every bit the netlist's emission walks for every input bit.
        for source, port in memories.buffer_write.items():
            with m.If(fire.spike_write & (desc.target == source)):
                chunks = memories.buffer_widths[source] // lanes
                m.d.comb += [
                    port.addr.eq(fire.spike_address),
                    port.data.eq(Cat(*([fire.spikes] * chunks))),
                    port.en.eq(Cat(*(fire.spike_chunk == k for k in range(chunks)))),
                ]


def _drive_write(m: Module, port: WritePort, source: object) -> None:
    """Drive a memory's write ``port`` from a stage's write members ``source``."""
    m.d.comb += [port.addr.eq(source.addr), port.data.eq(source.data), port.en.eq(source.en)]
