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

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from stepvit.model.export import Export
from stepvit.rtl.axil import RegisterFile, axi_lite_signature
from stepvit.rtl.core import StepvitCore
from stepvit.rtl.frame import FrameReceiver
from stepvit.rtl.interface import core_signature, image_words
from stepvit.rtl.latency import LatencyStamps
from stepvit.rtl.packer import ResultPacker
from stepvit.rtl.protocol import (
    ACCEL_ID,
    BATCH_BITS,
    CONTROL_CLEAR_ERROR,
    STATUS_BUSY,
    STATUS_FRAME_ERROR,
    mask_register_values,
    packet_words,
)
from stepvit.rtl.scheduler import ImageScheduler

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


def top_signature() -> wiring.Signature:
    """Return the flat, Vivado-named port list of ``stepvit_accel``."""
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

    Members
    -------
    aclk, aresetn : In(1)
        Clock and active-low synchronous reset.
    s_axis_* , m_axis_*, s_axil_*
        Image words in, result words out, registers (see :func:`top_signature`).
    """

    def __init__(self, export: Export, *, lanes: int, core: wiring.Component | None = None,
                 stem_lanes: int | None = None) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        if core is None:
            core = StepvitCore(export, lanes=lanes, stem_lanes=stem_lanes)
        if core.signature != core_signature(export):
            raise ValueError("core does not have the core_signature of this export")
        self.export = export
        self.lanes = lanes
        self.core = core
        self.image_words = image_words(export)
        self.packet_words = packet_words(export.arch["num_classes"], len(export.layer_names()))
        super().__init__(top_signature())
        self._annotate_interfaces()

    def _annotate_interfaces(self) -> None:
        """Attach Vivado's ``X_INTERFACE_INFO`` attributes to the ports."""
        self.aclk.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:clock:1.0 aclk CLK"
        self.aclk.attrs["X_INTERFACE_PARAMETER"] = (
            "ASSOCIATED_BUSIF s_axis:m_axis:s_axil, ASSOCIATED_RESET aresetn"
        )
        self.aresetn.attrs["X_INTERFACE_INFO"] = "xilinx.com:signal:reset:1.0 aresetn RST"
        self.aresetn.attrs["X_INTERFACE_PARAMETER"] = "POLARITY ACTIVE_LOW"
        for name in self.signature.members:
            bus, _, field = name.rpartition("_")
            if bus in ("s_axis", "m_axis"):
                info = f"{_AXIS_INFO} {bus} {field.upper()}"
            elif bus == "s_axil":
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
        m.submodules.registers = registers = RegisterFile(
            mask_resets=mask_register_values(export.timestep_mask), mask_width=export.t_max
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
        m.d.comb += [
            receiver.enable.eq(scheduler.buffer_free),
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
            registers.config_hash.eq(export.config_hash),
            registers.status[_bit_index(STATUS_BUSY)].eq(stamps.busy),
            registers.status[_bit_index(STATUS_FRAME_ERROR)].eq(scheduler.frame_error_seen),
            registers.cycles.eq(stamps.last_cycles),
            registers.images.eq(stamps.images),
            registers.t_max.eq(export.t_max),
            registers.num_modules.eq(len(export.module_names)),
            registers.lanes.eq(self.lanes),
        ]
        return m

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
