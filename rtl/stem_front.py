"""The core's front with a convolutional stem: pixels in, each image's stream of every step out.

The stem engine (:class:`~stepvit.rtl.stem_engine.StemEngine`) starts an image as soon as
it is loaded, while the blocks still compute the image before: the two overlap, so back to
back an image costs about the longer of its stem and its blocks, not their sum. Two pixel
banks (the next image loads while the stem reads the other) and two stream buffers (the
stem writes one while the blocks read and update the other) make that possible:

- ``loaded`` marks an image *pending*; the engine launches it when it is idle and no
  finished image waits (``ready`` low), into the stream buffer the blocks do not use;
- when the engine goes idle the image is *ready*; the core's control *takes* it when it
  starts that image (``take``): the blocks run on its buffer, the stem's next image goes
  into the other, and its layers' spike counts are latched for the image's packet.

With one stream buffer (``buffers=1``, a chunk-major stem: its tokens passes come last),
the stem computes the next image's layers while the blocks compute this one, but its tokens
passes, the only ones that write the stream, wait until the blocks are done with it
(``blocks_busy`` low): back to back an image costs the longer of the stem's layers and the
blocks, plus the tokens passes (``T · tokens · chunks`` cycles), and the design keeps one
buffer of the stream instead of two.

The engine samples the stem's mask rows when it launches an image (the host writes masks
while no image is in flight, rtl/PROTOCOL.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.model.export import Export
from stepvit.rtl.interface import image_words
from stepvit.rtl.stem_engine import COUNT_BITS, StemEngine
from stepvit.rtl.stem_loader import StemPixelLoader
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.stem_tiles import StemTiles


class StemFront(wiring.Component):
    """The stem engine, its pixel loader and the hand-off of each image to the blocks.

    Parameters
    ----------
    export : Export
        The export (its stem's weights, thresholds and widths).
    plan : StemPlan
        The stem at its lanes.
    token_lanes : int
        The core's lanes: channels of one stream word.
    stream_words : int
        Words of one stream buffer (``T · tokens · chunks``).
    writable : bool
        A ``weights="ddr"`` front: the engine's parameters are RAMs the weight loader fills
        (no value of the export is used); their write ports are :attr:`parameter_writes`.
    tiles : StemTiles, optional
        A chunk-major ``writable`` front that streams its tap weights
        (:class:`~stepvit.rtl.stem_engine.StemEngine`'s ``tiles``); :attr:`tile_buffer` is
        the engine's stem tile buffer.
    data_width, max_burst : int
        With ``tiles`` only: the AXI beat's bits and the longest burst.
    buffers : int
        Stream buffers: 2 (the stem writes one while the blocks use the other) or 1 (its
        tokens wait for ``blocks_busy`` to fall; a chunk-major plan only, whose tokens
        passes come after every layer's).
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed in UltraRAM or LUTs, by its names (the stem's
        with ``stem.`` before), and their ``ram_style`` (:mod:`stepvit.rtl.ram_style`).
        Default: none.
    maps_ddr : bool
        Keep the stem's emitted maps in DDR (the engine's ``maps_ddr``): :attr:`map_unit`
        is the engine's :class:`~stepvit.rtl.stem_map_ddr.StemMapDdr`, whose ports the
        core drives. Default ``False``.

    Members
    -------
    load, loaded, img_addr, img_data
        As the core's (:func:`stepvit.rtl.interface.core_signature`).
    mask : In(stem modules · T)
        The stem's live mask rows, bit ``module · T + t``.
    take : In(1)
        The core starts the ready image (only while ``ready``).
    ready : Out(1)
        An image's stream is complete in buffer ``token_buffer`` and not yet taken.
    buffer : Out(1)
        The stream buffer of the image taken last (the blocks' buffer; 0 with one buffer).
    blocks_busy : In(1)
        With one buffer: the blocks still read or write the stream (the stem's tokens wait).
    tokens_waiting : Out(1)
        With one buffer: the stem's tokens wait for the blocks this cycle.
    token_valid, token_buffer, token_address, token_data : Out
        A stream word the stem writes: buffer, address (step, token, chunk in order) and the
        ``lanes`` stream values.
    token_stall : In(1)
        The word offered is not taken this cycle (offered again the next).
    counts : Out(ArrayLayout(unsigned(32), stem modules))
        The spike counts of the image taken last, per stem layer.
    map_waiting : Out(1)
        With ``maps_ddr``: the engine waits for its maps this cycle.
    """

    def __init__(self, export: Export, plan: StemPlan, *, token_lanes: int,
                 stream_words: int, writable: bool = False, tiles: StemTiles | None = None,
                 data_width: int = 64, max_burst: int = 16, buffers: int = 2,
                 ram_styles: Mapping[str, str] | None = None, maps_ddr: bool = False) -> None:
        if buffers not in (1, 2):
            raise ValueError(f"a stem front has 1 or 2 stream buffers, not {buffers}")
        if buffers == 1 and not plan.chunk_major:
            raise ValueError("one stream buffer needs a chunk-major stem (its tokens come last)")
        self._export, self._plan = export, plan
        self.buffers = buffers
        modules = len(plan.stages)
        self._engine = StemEngine(
            plan, arrays=export.arrays, thresholds=export.thresholds, bits=export.bit_widths,
            leak_shift=int(export.neuron["leak_shift"]), reset=str(export.neuron["reset"]),
            token_lanes=token_lanes, writable=writable, tiles=tiles, data_width=data_width,
            max_burst=max_burst, ram_styles=ram_styles, maps_ddr=maps_ddr)
        #: ``maps_ddr`` only: the engine's maps unit (else None).
        self.map_unit = self._engine.map_unit
        #: ``tiles`` only: the engine's stem tile buffer.
        self.tile_buffer = self._engine.tile_buffer
        #: ``writable`` only: the engine's parameter RAMs' write ports by image name.
        self.parameter_writes = self._engine.parameter_writes
        super().__init__({
            "load": In(1),
            "loaded": Out(1),
            "img_addr": Out(range(max(image_words(export), 2))),
            "img_data": In(32),
            "mask": In(modules * plan.t_max),
            "take": In(1),
            "ready": Out(1),
            "buffer": Out(1),
            "blocks_busy": In(1),
            "tokens_waiting": Out(1),
            "token_valid": Out(1),
            "token_stall": In(1),
            "token_buffer": Out(1),
            "token_address": Out(range(max(stream_words, 2))),
            "token_data": Out(len(self._engine.token_data.as_value())),
            "counts": Out(data.ArrayLayout(unsigned(COUNT_BITS), modules)),
            **({"map_waiting": Out(1)} if maps_ddr else {}),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the loader, the engine and the launch / ready / take hand-off."""
        m = Module()
        m.submodules.engine = engine = self._engine
        if self.map_unit is not None:
            m.d.comb += self.map_waiting.eq(engine.map_waiting)
        m.submodules.loader = loader = StemPixelLoader(
            image_shape=tuple(self._export.arch["image_shape"]))
        load_bank, run_bank = Signal(), Signal()
        pending, running = Signal(), Signal()
        launch = pending & ~running & ~self.ready
        m.d.comb += [
            loader.start.eq(self.load), self.loaded.eq(loader.done),
            self.img_addr.eq(loader.img_addr), loader.img_data.eq(self.img_data),
            engine.pixel_valid.eq(loader.pixel_valid), engine.pixel_bank.eq(load_bank),
            engine.pixel_address.eq(loader.pixel_address),
            engine.pixel_data.eq(loader.pixel_data),
            engine.mask.eq(self.mask), engine.bank.eq(run_bank), engine.start.eq(launch),
            self.token_valid.eq(engine.token_valid), engine.token_stall.eq(self.token_stall),
            self.token_data.eq(engine.token_data.as_value()),
        ]
        if self.buffers == 2:
            m.d.comb += self.token_buffer.eq(~self.buffer)
        else:
            m.d.comb += [engine.hold_tokens.eq(self.blocks_busy),
                         self.tokens_waiting.eq(engine.tokens_waiting)]
        with m.If(loader.done):
            m.d.sync += load_bank.eq(~load_bank)
        with m.If(launch):
            # the engine is busy from the next cycle: its sequencer loads the tokens passes
            m.d.sync += [running.eq(1), pending.eq(0), run_bank.eq(~run_bank),
                         self.token_address.eq(0)]
        with m.Elif(engine.token_valid & ~self.token_stall):
            m.d.sync += self.token_address.eq(self.token_address + 1)
        with m.If(loader.done):
            m.d.sync += pending.eq(1)
        with m.If(running & ~engine.busy):
            m.d.sync += [running.eq(0), self.ready.eq(1)]
        with m.If(self.take):
            if self.buffers == 2:
                m.d.sync += self.buffer.eq(~self.buffer)
            m.d.sync += [self.ready.eq(0),
                         *(self.counts[i].eq(engine.counts[i])
                           for i in range(len(self._plan.stages)))]
        return m


__all__ = ["StemFront"]
