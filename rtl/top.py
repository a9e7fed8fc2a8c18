"""The accelerator's top ``stepvit_accel``: AXI streams and registers around the core.

::

    s_axis ─► FrameReceiver (frame check, image buffer) ─► core ─► ResultPacker ─► m_axis
                                                             ▲
    s_axil ─► RegisterFile (ID, hash, status, cycles, masks) ┘

Images overlap: the input stream is ready whenever the image buffer is free, so the next
frame streams in while the image before it loads into the core's second patch bank or
computes; the core runs each complete, checked frame after the previous packet is sent,
and the packer streams its result. A dropped frame (rtl/PROTOCOL.md) skips the core and
still gets its packet, in order. :class:`~stepvit.rtl.scheduler.ImageScheduler` decides
which image moves when; :class:`~stepvit.rtl.latency.LatencyStamps` times each image;
:class:`StepvitAccel` only wires them.
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import ClockDomain, ClockSignal, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stepvit.model.export import Export
from stepvit.rtl.axi_reader import AXI_READ_MEMBERS, connect_axi, connect_axi_read
from stepvit.rtl.axi_writer import AXI_WRITE_MEMBERS
from stepvit.rtl.axil import RegisterFile, axi_lite_signature
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.design_image import image_memories, stem_plan_of
from stepvit.rtl.frame import FrameReceiver
from stepvit.rtl.interface import core_signature, image_words
from stepvit.rtl.latency import LatencyStamps
from stepvit.rtl.packer import ResultPacker
from stepvit.rtl.protocol import (
    ACCEL_ID,
    BATCH_BITS,
    CONTROL_CLEAR_ERROR,
    CONTROL_LOAD_WEIGHTS,
    STATUS_BUSY,
    STATUS_FRAME_ERROR,
    STATUS_STREAM_ERROR,
    STATUS_WEIGHTS_ERROR,
    STATUS_WEIGHTS_LOADED,
    STATUS_WEIGHTS_LOADING,
    mask_register_values,
    packet_words,
    registers_for,
)
from stepvit.rtl.scheduler import ImageScheduler
from stepvit.rtl.weight_image import CHECKSUM_WORD_BITS
from stepvit.rtl.weight_loader import WeightLoader

#: Verilog name of the top module.
TOP_NAME = "stepvit_accel"

#: Vivado interface names of the ports, so the block design infers the AXI interfaces.
_AXIS_INFO = "xilinx.com:interface:axis:1.0"
_AXIL_INFO = "xilinx.com:interface:aximm:1.0"


#: Images that can be in flight at once: one computing (or sending its packet), one
#: waiting to start, one in the image buffer (streaming in, or loading).
IMAGES_IN_FLIGHT = 3


def _bit_index(flag: int) -> int:
    """Return the bit position of a one-bit register flag such as ``STATUS_BUSY``."""
    return flag.bit_length() - 1


#: The AXI4 read master's ports of a ``weights="ddr"`` design, ``m_axi_<name>``: the read
#: address and read data channels only (the loader never writes), Vivado's names.
AXI_MASTER_PORTS = AXI_READ_MEMBERS
#: The AXI4 read master's defaults: the PYNQ-Z2's HP port (64-bit, AXI3 bursts of 16).
DEFAULT_DATA_WIDTH = 64
DEFAULT_MAX_BURST = 16
#: Bits of the weight image's byte address (one ``WEIGHTS_ADDR`` register).
WEIGHTS_ADDR_BITS = 32


def top_signature(loader: WeightLoader | None = None,
                  writes: dict[str, wiring.Member] | None = None) -> wiring.Signature:
    """Return the flat, Vivado-named port list of ``stepvit_accel``.

    With ``loader`` (a ``weights="ddr"`` design) the list gains its AXI4 read channels as
    ``m_axi_*`` (master side); with ``writes`` (a design whose stream is in DDR) the AXI4
    write channels too (``m_axi_aw*``, ``m_axi_w*``, ``m_axi_b*``): one AXI4 master.
    """
    members: dict[str, wiring.Member] = {
        "aclk": In(1),
        "aresetn": In(1),
        "s_axis_tdata": In(32),
        "s_axis_tvalid": In(1),
        "s_axis_tready": Out(1),
        "s_axis_tlast": In(1),
        "m_axis_tdata": Out(32),
        "m_axis_tvalid": Out(1),
        "m_axis_tready": In(1),
        "m_axis_tlast": Out(1),
    }
    for name, member in axi_lite_signature().flip().members.items():
        members[f"s_axil_{name}"] = member
    if loader is not None:
        for name in AXI_MASTER_PORTS:
            members[f"m_axi_{name}"] = loader.signature.members[name]
    for name, member in (writes or {}).items():
        members[f"m_axi_{name}"] = member
    return wiring.Signature(members)


class StepvitAccel(wiring.Component):
    """The accelerator for one export, with its AXI4-Stream and AXI4-Lite ports.

    Parameters
    ----------
    export : Export
        The model the design computes (weights are baked into on-chip memories).
    lanes : int
        Parallel accumulator lanes of the core.
    core : wiring.Component, optional
        A component with :func:`stepvit.rtl.interface.core_signature` to use instead of
        ``StepvitCore(export, lanes=lanes)``; for testing the top alone.
    stem_lanes : int, optional
        The stem engine's lanes (a convolutional stem only; default ``lanes``).
    stem_chunk_major : bool
        A convolutional stem only: run the stem module by module, chunk by chunk
        (``StepvitCore(stem_chunk_major=True)``); with ``"ddr"`` the weight image's tap
        words are in that order. Default ``False``.
    weights : str
        ``"rom"`` (default): the parameters are baked into on-chip ROMs. ``"ddr"``: they
        are RAMs a :class:`~stepvit.rtl.weight_loader.WeightLoader` fills from a weight
        image in DDR (``rtl/design_image.py``) through the ``m_axi_*`` read channels; the
        design depends only on the export's shape (``CONFIG_HASH`` reads its shape hash),
        its masks reset to every step active, and frames wait (``s_axis_tready`` low) until
        a load has completed without an error response (rtl/PROTOCOL.md).
    data_width, max_burst : int
        ``"ddr"`` only: the AXI master's bits a beat and beats a burst (a board's ``ddr``
        figures; default the PYNQ-Z2's HP port, 64 and 16).
    widths : dict of str to int, optional
        ``"ddr"`` only: the design's bit widths (default the export's), each at least the
        export's (:func:`~stepvit.model.export.design_widths`); the datapath, the parameter
        memories and the logit port take them, so the design serves every export of the
        shape whose widths fit (:func:`~stepvit.model.export.widths_fit`).
    stream_weights : bool
        ``"ddr"`` only: the core keeps no weight memory and streams each pass's weights
        from the loaded image during compute (``StepvitCore(stream_weights=True)``); the
        loader and the core's tile buffer share ``m_axi`` (the loader while loading, the
        tiles after), and ``WEIGHT_STALLS`` reads the cycles the core waited for a tile.
    tile_words : int, optional
        ``stream_weights`` only: the most weight words of one tile (longer weight passes are
        split, :class:`~stepvit.rtl.core_plan.CorePlan`); default: a pass's words.
    spike_word_bits : int, optional
        The widest word of a spike map: a token's spikes wider than this are held as
        several words (segments) and the core's walk logic is this wide
        (``StepvitCore(spike_word_bits=...)``, :class:`~stepvit.rtl.core_plan.CoreGeometry`);
        default: one word a token.
    stream_ddr : bool
        ``stream_weights`` only: the core keeps the residual stream in DDR, not on chip
        (``StepvitCore(stream_ddr=True)``, :mod:`stepvit.rtl.stream_ddr`): its reads share
        the tiles' port, its writes are ``m_axi``'s write channels, the host gives it an
        activation buffer of ``ACTIVATION_BYTES`` at ``ACTIVATIONS_ADDR``, and
        ``STREAM_STALLS`` reads the cycles the core waited for it.
    stem_maps_ddr : bool
        ``stream_ddr`` with a chunk-major stem only: the stem's emitted maps are in the
        activation buffer too (``StepvitCore(stem_maps_ddr=True)``,
        :mod:`stepvit.rtl.stem_map_ddr`); ``STEM_MAP_STALLS`` reads the cycles the stem
        waited for them.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed (:func:`stepvit.rtl.sizing.place_ultraram`,
        :func:`stepvit.rtl.sizing.place_distributed`, by its names): each is marked
        ``ram_style`` ``"ultra"`` (UltraRAM) or ``"distributed"`` (LUTs)
        (:mod:`stepvit.rtl.ram_style`). Default: none.

    Members
    -------
    aclk, aresetn : In(1)
        Clock and active-low synchronous reset.
    s_axis_* , m_axis_*, s_axil_*
        Image words in, result words out, registers (see :func:`top_signature`).
    m_axi_*
        ``"ddr"`` only: the weight loader's AXI4 read address and read data channels (and
        the stream's write channels, ``stream_ddr``).
    """

    def __init__(self, export: Export, *, lanes: int, core: wiring.Component | None = None,
                 stem_lanes: int | None = None, stem_chunk_major: bool = False,
                 weights: str = "rom", data_width: int = DEFAULT_DATA_WIDTH,
                 max_burst: int = DEFAULT_MAX_BURST,
                 widths: dict[str, int] | None = None, stream_weights: bool = False,
                 tile_words: int | None = None,
                 spike_word_bits: int | None = None, stream_ddr: bool = False,
                 ram_styles: Mapping[str, str] | None = None,
                 stem_maps_ddr: bool = False) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        if widths is not None and weights != "ddr":
            raise ValueError("a design's own widths are for weights='ddr' only")
        if stem_chunk_major and not export.arch.get("stem"):
            raise ValueError("stem_chunk_major is for an export with a convolutional stem")
        export = export.at_widths(widths)  # the datapath, the memories and the ports
        if stream_ddr and not stream_weights:
            raise ValueError("stream_ddr needs stream_weights (the stream's reads share "
                             "the tiles' port)")
        self.registers = registers_for(weights, stream_ddr)
        self.stream_ddr = stream_ddr
        self.weights = weights
        self.loader = None
        parameters = None
        if weights == "ddr":
            parameters = image_memories(
                CorePlan(export, lanes=lanes, contents=False),
                stem_plan_of(export, lanes=lanes, stem_lanes=stem_lanes,
                             chunk_major=stem_chunk_major))
            self.loader = WeightLoader(parameters, data_width=data_width, max_burst=max_burst,
                                       addr_width=WEIGHTS_ADDR_BITS)
        if stream_weights and weights != "ddr":
            raise ValueError("stream_weights needs weights='ddr'")
        if tile_words is not None and not stream_weights:
            raise ValueError("tile_words is for stream_weights only")
        self.stream_weights = stream_weights
        if core is None:
            core = StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes,
                               stem_chunk_major=stem_chunk_major, weights=weights,
                               stream_weights=stream_weights, data_width=data_width,
                               max_burst=max_burst, tile_words=tile_words,
                               spike_word_bits=spike_word_bits, stream_ddr=stream_ddr,
                               ram_styles=ram_styles, stem_maps_ddr=stem_maps_ddr)
        tile_axi = ({name: self.loader.signature.members[name] for name in AXI_READ_MEMBERS}
                    if stream_weights else None)
        writes = ({name: core.signature.members[f"act_{name}"] for name in AXI_WRITE_MEMBERS}
                  if stream_ddr else None)
        if core.signature != core_signature(export, parameters, tile_axi, writes):
            raise ValueError("core does not have the core_signature of this export")
        self.export = export
        self.lanes = lanes
        self.core = core
        self.image_words = image_words(export)
        self.packet_words = packet_words(export.arch["num_classes"], len(export.layer_names()))
        super().__init__(top_signature(self.loader, writes))
        self._annotate_interfaces()

    def _annotate_interfaces(self) -> None:
        """Attach Vivado's ``X_INTERFACE_INFO`` attributes to the ports."""
        self.aclk.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:clock:1.0 aclk CLK"
        buses = "s_axis:m_axis:s_axil" + (":m_axi" if self.loader is not None else "")
        self.aclk.attrs["X_INTERFACE_PARAMETER"] = (
            f"ASSOCIATED_BUSIF {buses}, ASSOCIATED_RESET aresetn"
        )
        self.aresetn.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:reset:1.0 aresetn RST"
        self.aresetn.attrs["X_INTERFACE_PARAMETER"] = "POLARITY ACTIVE_LOW"
        for name in self.signature.members:
            bus, _, field = name.rpartition("_")
            if bus in ("s_axis", "m_axis"):
                info = f"{_AXIS_INFO} {bus} {field.upper()}"
            elif bus in ("s_axil", "m_axi"):
                info = f"{_AXIL_INFO} {bus} {field.upper()}"
            else:
                continue
            getattr(self, name).attrs["X_INTERFACE_INFO"] = info

    def elaborate(self, platform: object) -> Module:
        """Wire the receiver, the core, the packer, the registers and the scheduler."""
        m = Module()
        export = self.export
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]

        m.submodules.core = core = self.core
        m.submodules.receiver = receiver = FrameReceiver(image_words=self.image_words)
        m.submodules.packer = packer = ResultPacker(
            num_classes=export.arch["num_classes"],
            logit_bits=export.bit_widths["logit"],
            layers=len(export.layer_names()),
        )
        ddr = self.loader is not None
        # a ddr design serves every export of its shape: its masks reset to every step
        # active, and the host writes the export's
        mask_resets = ([(1 << export.t_max) - 1] * len(export.module_names) if ddr
                       else mask_register_values(export.timestep_mask))
        if ddr:
            m.submodules.registers = registers = RegisterFile(
                mask_resets=mask_resets, mask_width=export.t_max, registers=self.registers)
        else:
            m.submodules.registers = registers = RegisterFile(
                mask_resets=mask_resets, mask_width=export.t_max
            )
        m.submodules.scheduler = scheduler = ImageScheduler()
        m.submodules.stamps = stamps = LatencyStamps(slots=IMAGES_IN_FLIGHT)
        self._connect_axi(m, receiver, packer, registers)

        # The core reads the image buffer and the live mask registers.
        m.d.comb += [
            receiver.read_addr.eq(core.img_addr),
            core.img_data.eq(receiver.read_data),
            core.masks.eq(registers.masks),
            packer.logits.eq(core.logits),
            packer.predicted.eq(core.predicted),
            packer.spike_counts.eq(core.spike_counts),
        ]
        weights_ready = self._connect_loader(m, registers) if ddr else None
        m.d.comb += [
            # ddr: frames wait in the input stream until the parameters are loaded
            receiver.enable.eq(scheduler.buffer_free if weights_ready is None
                               else scheduler.buffer_free & weights_ready),
            receiver.batch.eq(registers.batch[:BATCH_BITS]),
            scheduler.frame_done.eq(receiver.frame_done),
            scheduler.frame_error.eq(receiver.frame_error),
            scheduler.frame_last.eq(receiver.frame_last),
            core.load.eq(scheduler.load),
            scheduler.loaded.eq(core.loaded),
            core.start.eq(scheduler.start),
            scheduler.done.eq(core.done),
            packer.send.eq(scheduler.send),
            packer.error.eq(scheduler.error),
            packer.end.eq(scheduler.end),
            scheduler.sent.eq(packer.sent),
            scheduler.clear_error.eq(
                registers.control_written & registers.control[_bit_index(CONTROL_CLEAR_ERROR)]),
            stamps.first_word.eq(receiver.first_word),
            stamps.send.eq(scheduler.send),
            stamps.sent.eq(packer.sent),
            packer.cycles.eq(stamps.cycles),
        ]
        m.d.comb += [
            registers.id.eq(ACCEL_ID),
            registers.config_hash.eq(export.shape_hash if ddr else export.config_hash),
            registers.status[_bit_index(STATUS_BUSY)].eq(stamps.busy),
            registers.status[_bit_index(STATUS_FRAME_ERROR)].eq(scheduler.frame_error_seen),
            registers.cycles.eq(stamps.last_cycles),
            registers.images.eq(stamps.images),
            registers.busy_cycles.eq(stamps.busy_cycles),
            registers.t_max.eq(export.t_max),
            registers.num_modules.eq(len(export.module_names)),
            registers.lanes.eq(self.lanes),
        ]
        return m

    def _connect_loader(self, m: Module, registers: RegisterFile) -> Signal:
        """Add the weight loader: its AXI ports, registers and memories; return "loaded".

        ``CONTROL_LOAD_WEIGHTS`` starts a load from ``WEIGHTS_ADDR``; ``STATUS`` shows it
        loading, loaded (no error response) or failed; ``WEIGHTS_CHECKSUM_*`` its checksum.
        """
        m.submodules.weight_loader = loader = self.loader
        wiring.connect(m, loader.writes, self.core.parameters)
        load = registers.control_written & registers.control[_bit_index(CONTROL_LOAD_WEIGHTS)]
        loaded = Signal(name="weights_loaded")
        loading = loader.busy
        m.d.comb += loaded.eq(loader.done & ~loader.error)
        if self.stream_weights:
            load, waiting = self._share_axi(m, loader, load, loaded)
            loading = loading | waiting
            m.d.comb += [self.core.weights_base.eq(registers.weights_addr),
                         registers.weight_stalls.eq(self.core.weight_stalls),
                         registers.stem_weight_stalls.eq(self.core.stem_weight_stalls)]
            if self.stream_ddr:
                core = self.core
                m.d.comb += [
                    core.activations_base.eq(registers.activations_addr),
                    registers.activation_bytes.eq(core.activation_bytes),
                    registers.stream_stalls.eq(core.stream_stalls),
                    registers.stem_map_stalls.eq(core.stem_map_stalls),
                    registers.status[_bit_index(STATUS_STREAM_ERROR)].eq(core.stream_error),
                ]
                connect_axi(m, core, lambda name: getattr(self, f"m_axi_{name}"),
                            AXI_WRITE_MEMBERS, prefix="act_")
        else:
            connect_axi_read(m, loader, lambda name: getattr(self, f"m_axi_{name}"))
        m.d.comb += [
            loader.base.eq(registers.weights_addr),
            loader.start.eq(load),
            registers.status[_bit_index(STATUS_WEIGHTS_LOADED)].eq(loaded),
            registers.status[_bit_index(STATUS_WEIGHTS_ERROR)].eq(loader.error),
            registers.status[_bit_index(STATUS_WEIGHTS_LOADING)].eq(loading),
            registers.weights_checksum_lo.eq(loader.checksum[:CHECKSUM_WORD_BITS]),
            registers.weights_checksum_hi.eq(loader.checksum[CHECKSUM_WORD_BITS:]),
        ]
        return loaded

    def _share_axi(self, m: Module, loader: WeightLoader, request: Value,
                   loaded: Signal) -> tuple[Signal, Signal]:
        """Give ``m_axi`` to the core's tiles or to the loader.

        A load asked for (``request``) waits until no tile fetch is under way: the core's
        ``tiles_enable`` falls with the request (the loaded image is no longer whole), the
        tile buffer ends the fetch it has begun, and only then the loader takes the port.
        The tiles hold it while the image is loaded and no load is asked for, and while a
        fetch is under way. Returns the load's start and "a load waits for the port".
        """
        core = self.core
        pending = Signal(name="load_pending")
        start = Signal(name="load_start")
        asked = pending | request
        m.d.comb += [
            core.tiles_enable.eq(loaded & ~asked),
            start.eq(asked & core.tiles_idle),
        ]
        with m.If(start):
            m.d.sync += pending.eq(0)
        with m.Elif(request):
            m.d.sync += pending.eq(1)
        tiles_own = Signal(name="tiles_own_axi")
        m.d.comb += tiles_own.eq(~core.tiles_idle | core.tiles_enable)
        for name in AXI_MASTER_PORTS:
            port = getattr(self, f"m_axi_{name}")
            inner, tile = getattr(loader, name), getattr(core, f"tile_{name}")
            if loader.signature.members[name].flow == In:  # from the memory to the master
                if name in ("arready", "rvalid"):
                    m.d.comb += [inner.eq(port & ~tiles_own), tile.eq(port & tiles_own)]
                else:
                    m.d.comb += [inner.eq(port), tile.eq(port)]
            else:
                m.d.comb += port.eq(Mux(tiles_own, tile, inner))
        return start, pending

    def _connect_axi(self, m: Module, receiver: FrameReceiver, packer: ResultPacker,
                     registers: RegisterFile) -> None:
        """Wire the flat AXI ports to the receiver's, the packer's and the registers' buses."""
        m.d.comb += [
            receiver.words.payload.data.eq(self.s_axis_tdata),
            receiver.words.payload.last.eq(self.s_axis_tlast),
            receiver.words.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(receiver.words.ready),
            self.m_axis_tdata.eq(packer.words.payload.data),
            self.m_axis_tlast.eq(packer.words.payload.last),
            self.m_axis_tvalid.eq(packer.words.valid),
            packer.words.ready.eq(self.m_axis_tready),
        ]
        for name, member in registers.bus.signature.members.items():
            port, inner = getattr(self, f"s_axil_{name}"), getattr(registers.bus, name)
            m.d.comb += inner.eq(port) if member.flow == In else port.eq(inner)
