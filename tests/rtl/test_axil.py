"""The AXI4-Lite register file (``rtl/axil.py``) against the register map of ``rtl/protocol.py``.

Every register is read and written over the bus in Amaranth's simulator at the offset that
``REGISTERS`` and ``offset`` of the protocol give it, the mask registers in the protocol's
encoding (``mask_register_values``).
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.axil import RegisterFile
from stepvit.rtl.protocol import ACCEL_ID, REGISTERS, mask_register_values, offset

#: AXI4-Lite response codes (the AXI specification).
OKAY, SLVERR = 0b00, 0b10
#: The trained mask of a depth-1 design with T = 5: four modules.
MASK = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0], [1, 1, 0, 0, 1]])
T_MAX = MASK.shape[1]
READ_ONLY = [r for r in REGISTERS if r.access == "r"]
WRITABLE = [r for r in REGISTERS if r.access == "rw"]
#: Byte offsets that are no register: the first and last gap in the table before the masks
#: (where a ddr design's registers are), past the masks, the last word.
GAPS = [address for address in range(0, offset("MASK0"), 4)
        if address not in {r.offset for r in REGISTERS}]
UNMAPPED = [GAPS[0], GAPS[-1], offset(f"MASK{len(MASK)}"), 0xFFC]


class Bus:
    """An AXI4-Lite manager on the register file's ``bus``, one transaction at a time."""

    def __init__(self, ctx, dut: RegisterFile) -> None:
        self.ctx, self.bus, self.dut = ctx, dut.bus, dut

    async def write(self, address: int, value: int, strobe: int = 0xF) -> tuple[int, list]:
        """Write; return the response and the ``<name>_written`` members that pulsed."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.awaddr, address)
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, strobe)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        while not (ctx.get(bus.awready) and ctx.get(bus.wready)):
            await ctx.tick()
        await ctx.tick()
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        pulsed = [r.name for r in WRITABLE
                  if ctx.get(getattr(self.dut, f"{r.name.lower()}_written"))]
        ctx.set(bus.bready, 1)
        while not ctx.get(bus.bvalid):
            await ctx.tick()
        response = ctx.get(bus.bresp)
        await ctx.tick()
        ctx.set(bus.bready, 0)
        return response, pulsed

    async def read(self, address: int) -> tuple[int, int]:
        """Read; return the response and the data."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.araddr, address)
        ctx.set(bus.arvalid, 1)
        while not ctx.get(bus.arready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.rready, 1)
        while not ctx.get(bus.rvalid):
            await ctx.tick()
        response, data = ctx.get(bus.rresp), ctx.get(bus.rdata)
        await ctx.tick()
        ctx.set(bus.rready, 0)
        return response, data


def simulate(body) -> None:
    """Run ``body(ctx, dut, bus)`` against a register file reset to :data:`MASK`."""
    dut = RegisterFile(mask_resets=mask_register_values(MASK), mask_width=T_MAX)

    async def testbench(ctx):
        await body(ctx, dut, Bus(ctx, dut))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def input_values() -> dict[str, int]:
    """A distinct value for each read-only register; ``ID`` holds the protocol's ID."""
    rng = np.random.default_rng(0)
    values = {r.name: int(rng.integers(0, 2**32)) for r in READ_ONLY}
    values["ID"] = ACCEL_ID
    return values


def test_each_read_only_register_reads_its_input_at_its_offset() -> None:
    values = input_values()

    async def body(ctx, dut, bus):
        for name, value in values.items():
            ctx.set(getattr(dut, name.lower()), value)
        for name, value in values.items():
            assert await bus.read(offset(name)) == (OKAY, value), name

    simulate(body)


def test_the_mask_registers_reset_to_the_trained_masks() -> None:
    async def body(ctx, dut, bus):
        expected = mask_register_values(MASK)
        for module, value in enumerate(expected):
            assert await bus.read(offset(f"MASK{module}")) == (OKAY, value), module
            assert ctx.get(dut.masks[module]) == value

    simulate(body)


def test_a_write_lands_in_its_register_only_and_pulses_its_written() -> None:
    async def body(ctx, dut, bus):
        for index, register in enumerate(WRITABLE):
            value = 0x1234_0000 + index
            assert await bus.write(register.offset, value) == (OKAY, [register.name])
            assert ctx.get(getattr(dut, register.name.lower())) == value
            assert await bus.read(register.offset) == (OKAY, value)
            await ctx.tick()
            assert not ctx.get(getattr(dut, f"{register.name.lower()}_written"))
        assert [ctx.get(getattr(dut, r.name.lower())) for r in WRITABLE] == [
            0x1234_0000 + index for index in range(len(WRITABLE))]
        capped = mask_register_values(MASK[:, :2])  # a budget of two steps
        for module, value in enumerate(capped):
            assert await bus.write(offset(f"MASK{module}"), value) == (OKAY, [])
        assert [ctx.get(dut.masks[m]) for m in range(len(MASK))] == capped

    simulate(body)


def test_write_strobes_write_only_their_bytes() -> None:
    register = WRITABLE[0]

    async def body(ctx, dut, bus):
        await bus.write(register.offset, 0x1122_3344)
        for strobe, expected in ((0b0101, 0x11BB_33DD), (0b1000, 0xAABB_33DD), (0, 0xAABB_33DD)):
            assert (await bus.write(register.offset, 0xAABB_CCDD, strobe))[0] == OKAY
            assert await bus.read(register.offset) == (OKAY, expected), f"{strobe:04b}"
        # A mask register holds T_MAX bits: the bytes above them are not kept.
        assert await bus.write(offset("MASK0"), 0xFFFF_FFFF) == (OKAY, [])
        assert await bus.read(offset("MASK0")) == (OKAY, 2**T_MAX - 1)

    simulate(body)


@pytest.mark.parametrize("address", [r.offset for r in READ_ONLY] + UNMAPPED,
                         ids=[r.name for r in READ_ONLY] + [f"{a:#05x}" for a in UNMAPPED])
def test_a_write_to_no_writable_register_is_refused_and_changes_nothing(address: int) -> None:
    values = input_values()

    async def body(ctx, dut, bus):
        for name, value in values.items():
            ctx.set(getattr(dut, name.lower()), value)
        assert await bus.write(address, 0xDEAD_BEEF) == (SLVERR, [])
        for name, value in values.items():
            assert await bus.read(offset(name)) == (OKAY, value)
        for register in WRITABLE:
            assert await bus.read(register.offset) == (OKAY, 0)
        for module, value in enumerate(mask_register_values(MASK)):
            assert await bus.read(offset(f"MASK{module}")) == (OKAY, value)

    simulate(body)


@pytest.mark.parametrize("address", UNMAPPED, ids=[f"{a:#05x}" for a in UNMAPPED])
def test_a_read_of_no_register_is_refused_with_zero(address: int) -> None:
    async def body(ctx, dut, bus):
        ctx.set(dut.id, ACCEL_ID)
        assert await bus.read(address) == (SLVERR, 0)
        assert await bus.read(offset("ID")) == (OKAY, ACCEL_ID)

    simulate(body)


def test_back_to_back_transactions_with_valid_and_ready_held_high() -> None:
    """Writes then reads with every valid and ready high throughout: one transaction every
    two cycles, each answered in order, none lost."""
    targets = [offset(f"MASK{m}") for m in range(len(MASK))] + [r.offset for r in WRITABLE]
    values = [(0x15 * (k + 1)) % 2**T_MAX for k in range(len(MASK))] + [0xCAFE_0001, 7]

    async def body(ctx, dut, _):
        bus = dut.bus
        ctx.set(bus.bready, 1)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.wstrb, 0xF)
        responses, cycles = [], 0
        for address, value in zip(targets, values):
            ctx.set(bus.awaddr, address)
            ctx.set(bus.wdata, value)
            while not ctx.get(bus.awready):
                if ctx.get(bus.bvalid):
                    responses.append(ctx.get(bus.bresp))
                await ctx.tick()
                cycles += 1
            await ctx.tick()
            cycles += 1
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        responses.append(ctx.get(bus.bresp) if ctx.get(bus.bvalid) else None)
        assert responses == [OKAY] * len(targets)
        assert cycles <= 2 * len(targets)

        ctx.set(bus.rready, 1)
        ctx.set(bus.arvalid, 1)
        data = []
        for address in targets:
            ctx.set(bus.araddr, address)
            while not ctx.get(bus.arready):
                if ctx.get(bus.rvalid):
                    data.append(ctx.get(bus.rdata))
                await ctx.tick()
            await ctx.tick()
        ctx.set(bus.arvalid, 0)
        data.append(ctx.get(bus.rdata))
        assert data == values

    simulate(body)


def test_a_response_waits_for_its_ready_and_holds_its_data() -> None:
    async def body(ctx, dut, _):
        bus = dut.bus
        ctx.set(dut.id, ACCEL_ID)
        ctx.set(bus.araddr, offset("ID"))
        ctx.set(bus.arvalid, 1)
        await ctx.tick()
        ctx.set(bus.araddr, offset("CONFIG_HASH"))
        for _ in range(4):  # rready low: the answer stays, no second read is taken
            assert ctx.get(bus.rvalid) and ctx.get(bus.rdata) == ACCEL_ID
            assert not ctx.get(bus.arready)
            await ctx.tick()
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.awaddr, WRITABLE[0].offset)
        ctx.set(bus.wdata, 1)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        await ctx.tick()
        ctx.set(bus.wdata, 2)
        for _ in range(4):  # bready low: no second write is taken
            assert ctx.get(bus.bvalid) and not ctx.get(bus.awready)
            await ctx.tick()
        assert ctx.get(getattr(dut, WRITABLE[0].name.lower())) == 1

    simulate(body)
