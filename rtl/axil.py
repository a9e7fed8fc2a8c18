"""The AXI4-Lite register file, built from the one register table in ``rtl/protocol.py``.

Every register of :data:`stepvit.rtl.protocol.REGISTERS` becomes a member of the
component, named after the register in lower case: a read-only register is an input
(the value the bus reads), a read-write register an output (the value last written) with
a ``<name>_written`` pulse. The mask registers ``MASK<i>`` are the ``masks`` output; they
reset to the trained masks.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.rtl.protocol import MASK_BASE, REGISTERS, Register

#: Width of the byte address on the ``s_axil`` port: one 4 KiB page.
ADDRESS_BITS = 12

#: AXI response codes.
RESP_OKAY = 0b00
RESP_SLVERR = 0b10


def axi_lite_signature(address_bits: int = ADDRESS_BITS) -> wiring.Signature:
    """Return an AXI4-Lite signature with 32-bit data, from the manager's point of view.

    Parameters
    ----------
    address_bits : int
        Width of ``awaddr`` and ``araddr``.
    """
    return wiring.Signature(
        {
            "awaddr": Out(address_bits),
            "awvalid": Out(1),
            "awready": In(1),
            "wdata": Out(32),
            "wstrb": Out(4),
            "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2),
            "bvalid": In(1),
            "bready": Out(1),
            "araddr": Out(address_bits),
            "arvalid": Out(1),
            "arready": In(1),
            "rdata": In(32),
            "rresp": In(2),
            "rvalid": In(1),
            "rready": Out(1),
        }
    )


class RegisterFile(wiring.Component):
    """AXI4-Lite subordinate holding the accelerator's registers.

    A write takes its address and data together (``awready`` and ``wready`` rise in the
    same cycle) and applies ``wstrb`` byte by byte. A read answers one cycle after its
    address. A write to a read-only register or to no register, and a read of no
    register, are answered with ``SLVERR`` and change nothing.

    Parameters
    ----------
    mask_resets : sequence of int
        Reset value of each mask register (bit ``t`` enables step ``t``), module order.
    mask_width : int
        Bits per mask register (the design's ``t_max``).
    registers : sequence of Register
        The registers besides the masks (default :data:`~stepvit.rtl.protocol.REGISTERS`;
        ``registers_for("ddr")`` adds the weight load's).

    Members
    -------
    bus : In(axi_lite_signature())
        The AXI4-Lite port.
    <register> : In(32) or Out(32)
        One per entry of ``registers``: read-only ones are inputs, read-write ones outputs.
    <register>_written : Out(1)
        One-cycle pulse after a write to a read-write register.
    masks : Out(ArrayLayout(unsigned(mask_width), len(mask_resets)))
        The mask registers.
    """

    def __init__(self, *, mask_resets: Sequence[int], mask_width: int,
                 registers: Sequence[Register] = REGISTERS) -> None:
        if mask_width < 1 or mask_width > 32:
            raise ValueError(f"mask_width must be 1..32, not {mask_width}")
        if not mask_resets:
            raise ValueError("mask_resets must name at least one module")
        for index, reset in enumerate(mask_resets):
            if not 0 <= reset < 2**mask_width:
                raise ValueError(f"mask_resets[{index}] = {reset} does not fit {mask_width} bits")
        if MASK_BASE + 4 * len(mask_resets) > 2**ADDRESS_BITS:
            raise ValueError(f"{len(mask_resets)} mask registers do not fit the address space")
        self._mask_resets = [int(reset) for reset in mask_resets]
        self._registers = tuple(registers)
        members = {"bus": In(axi_lite_signature())}
        for register in self._registers:
            name = register.name.lower()
            if register.access == "r":
                members[name] = In(32)
            else:
                members[name] = Out(32)
                members[f"{name}_written"] = Out(1)
        members["masks"] = Out(
            data.ArrayLayout(unsigned(mask_width), len(mask_resets)), init=self._mask_resets
        )
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        """Build the register file."""
        m = Module()
        bus = self.bus
        writable = [(r.offset, getattr(self, r.name.lower()))
                    for r in self._registers if r.access == "rw"]
        written = {r.offset: getattr(self, f"{r.name.lower()}_written")
                   for r in self._registers if r.access == "rw"}
        mask_offsets = [(MASK_BASE + 4 * index, self.masks[index])
                        for index in range(len(self._mask_resets))]
        word_address = Signal(ADDRESS_BITS - 2)

        # Write channel: take address and data together, answer on B.
        accept_write = ~bus.bvalid & bus.awvalid & bus.wvalid
        m.d.comb += [
            bus.awready.eq(accept_write),
            bus.wready.eq(accept_write),
            word_address.eq(bus.awaddr[2:]),
        ]
        for pulse in written.values():
            m.d.sync += pulse.eq(0)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(accept_write):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(RESP_SLVERR)]
            with m.Switch(word_address):
                for offset, target in writable + mask_offsets:
                    with m.Case(offset // 4):
                        m.d.sync += bus.bresp.eq(RESP_OKAY)
                        for byte in range(4):
                            if byte * 8 >= len(target):
                                break
                            with m.If(bus.wstrb[byte]):
                                m.d.sync += target[byte * 8:(byte + 1) * 8].eq(
                                    bus.wdata[byte * 8:(byte + 1) * 8]
                                )
                        if offset in written:
                            m.d.sync += written[offset].eq(1)

        # Read channel: one read in flight, answered the cycle after its address.
        readable = [(r.offset, getattr(self, r.name.lower())) for r in self._registers]
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0), bus.rresp.eq(RESP_SLVERR)]
            with m.Switch(bus.araddr[2:]):
                for offset, source in readable + mask_offsets:
                    with m.Case(offset // 4):
                        m.d.sync += [bus.rdata.eq(source), bus.rresp.eq(RESP_OKAY)]
        return m
