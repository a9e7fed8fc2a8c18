"""The virtual board: a pynq-compatible ``pynq`` module whose overlay is the Verilated RTL.

``host/backend_pynq.py`` runs unchanged against it: ``Overlay`` (with ``ip_dict`` and IP
drivers created on first use), ``MMIO`` on the AXI DMA's registers (run, soft reset, the
halted and idle bits of DMASR), ``allocate`` buffers (``flush``, ``invalidate``,
``freebuffer``), the DMA's ``sendchannel``/``recvchannel`` (``transfer``, ``idle``,
``error``) and the accelerator IP's ``read``/``write``. The accelerator's AXI-Lite port and
both AXI-Streams go to one Verilated ``stepvit_accel`` (``sim/verilator.py``): a register
access is an AXI4-Lite transaction on the RTL, and every ``idle`` poll of a busy channel
runs the clock for up to :data:`CYCLES_PER_POLL` cycles, moving the MM2S buffer into
``s_axis`` (TLAST on its last word, as the DMA does) and ``m_axis`` into the S2MM buffer
until its TLAST. So the config-hash check reads the design's own register, and a stream
that never ends runs into the driver's own deadline.

A weights-from-DDR overlay (``stepvit overlay`` of a ``--weights ddr`` build: its Verilog has
``m_axi_*`` and its ``overlay.json`` says ``weights: ddr``) runs too: every ``allocate``
buffer has a ``physical_address`` and is mapped into the harness's emulated DDR
(``sim/harness``), which answers the accelerator's read bursts with the board's
``ddr`` figures (the overlay's board, else the PYNQ-Z2's: first beat ``latency_cycles``
after the address, then a beat as often as ``bytes_per_cycle`` allows). So the driver's
load of an export's weight image, its checksum and a model swap run as on a board; the
clock runs only while the driver waits (each register access is a few cycles).

The "bitstream" is the folder of the ``.bit``: its ``stepvit_accel.v`` (``stepvit overlay``
writes one there; :func:`emulated_overlay` writes one for an export) is Verilated on
first load, cached by its hash. :func:`emulated_pynq` puts the module in
``sys.modules["pynq"]`` for the duration and stands in for what a board process has (root,
``XILINX_XRT``); nothing else of the driver is replaced.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from stepvit.model.export import Export
from stepvit.rtl.build_folder import DEFAULT_LANES
from stepvit.sim.verilator import VerilatedAccel, build_library

#: Block-design names of the overlay Tcl (``host/backend_pynq.py`` reads the same names).
DMA_NAME = "axi_dma_0"
ACCEL_NAME = "stepvit_accel_0"
#: Where the emulated overlay puts the DMA and the accelerator in the address map.
DMA_BASE = 0x4040_0000
ACCEL_BASE = 0x43C0_0000
#: AXI DMA registers (PG021) as the driver uses them.
MM2S_CONTROL, S2MM_CONTROL, STATUS_OFFSET = 0x00, 0x30, 0x04
RUN, SOFT_RESET = 1 << 0, 1 << 2
HALTED, IDLE = 1 << 0, 1 << 1
#: The S2MM channel's length register (PG021): bytes its last transfer received.
S2MM_LENGTH = 0x58
#: Clock cycles one ``idle`` poll of a busy channel runs.
CYCLES_PER_POLL = 20_000


#: Physical address of the emulated board's first ``allocate`` buffer.
BUFFER_BASE = 0x1000_0000
#: ``allocate`` buffers start at page boundaries, as the CMA allocator's do.
PAGE_BYTES = 4096


class EmulatedBuffer(np.ndarray):
    """A ``pynq.allocate`` buffer: host memory with the cache calls as no-ops."""

    def __array_finalize__(self, obj: object) -> None:
        base = getattr(obj, "physical_address", 0)
        if base and isinstance(obj, np.ndarray) and self.size:
            base += self.__array_interface__["data"][0] - obj.__array_interface__["data"][0]
        self.physical_address = base

    def flush(self) -> None:
        """Write the cache back (nothing to do: the emulated DMA reads host memory)."""

    def invalidate(self) -> None:
        """Drop the cache (nothing to do)."""

    def freebuffer(self) -> None:
        """Free the buffer (host memory: Python frees it)."""


class EmulatedBoard:
    """The Verilated accelerator and the state of the AXI DMA in front of it.

    Parameters
    ----------
    library : Path
        The harness library of the overlay's design.
    tlast : bool
        Whether MM2S raises TLAST on a transfer's last word (``False``: a stream without
        TLAST, which the accelerator waits on forever).
    """

    def __init__(self, library: Path, *, tlast: bool = True,
                 ddr_timing: tuple[int, int] = (40, 1)) -> None:
        self.accel = VerilatedAccel(library)
        self.accel.reset()
        if self.accel.ddr_width:
            self.accel.ddr_timing(*ddr_timing)
        self.tlast = tlast
        self.halted = {"MM2S": True, "S2MM": True}
        self.send: dict[str, Any] | None = None
        self.recv: dict[str, Any] | None = None

    def write_dma(self, address: int, value: int) -> None:
        """Write a DMA control register: run a channel, or soft-reset the DMA."""
        direction = {MM2S_CONTROL: "MM2S", S2MM_CONTROL: "S2MM"}.get(address)
        if direction is None:
            return
        if value & SOFT_RESET:
            self.halted = {"MM2S": True, "S2MM": True}
            self.send = self.recv = None
        elif value & RUN:
            self.halted[direction] = False

    def read_dma(self, address: int) -> int:
        """Read a DMA status register (halted, idle) or the S2MM length register."""
        if address == S2MM_LENGTH:
            return 4 * self.recv["moved"] if self.recv is not None else 0
        direction = {MM2S_CONTROL + STATUS_OFFSET: "MM2S",
                     S2MM_CONTROL + STATUS_OFFSET: "S2MM"}.get(address)
        if direction is None:
            return 0
        status = HALTED if self.halted[direction] else 0
        return status | (IDLE if self.channel_idle(direction, advance=False) else 0)

    def start(self, direction: str, array: np.ndarray) -> None:
        """Start one transfer, as ``pynq``'s ``_SDMAChannel.transfer`` does."""
        if self.halted[direction]:
            raise RuntimeError("DMA channel not started")
        if not self.channel_idle(direction, advance=False):
            raise RuntimeError("DMA channel not idle")
        transfer = {"array": array, "moved": 0, "done": False}
        if direction == "MM2S":
            self.send = transfer
        else:
            self.recv = transfer

    def channel_idle(self, direction: str, *, advance: bool = True) -> bool:
        """Return whether ``direction`` has no unfinished transfer; run the clock if asked."""
        transfer = self.send if direction == "MM2S" else self.recv
        if transfer is None or transfer["done"]:
            return True
        if advance:
            self.run_clock()
        return bool(transfer["done"])

    def run_clock(self) -> None:
        """Move words on both streams for up to :data:`CYCLES_PER_POLL` cycles."""
        send = self.send if self.send is not None and not self.send["done"] else None
        recv = self.recv if self.recv is not None and not self.recv["done"] else None
        words = (np.ascontiguousarray(send["array"], dtype=np.uint32).ravel()[send["moved"]:]
                 if send is not None else np.zeros(0, dtype=np.uint32))
        capacity = (recv["array"].size - recv["moved"]) if recv is not None else 0
        taken, received, last, _ = self.accel.stream(
            words, tlast=self.tlast, out_capacity=capacity, stop_on_tlast=recv is not None,
            max_cycles=CYCLES_PER_POLL)
        if send is not None:
            send["moved"] += taken
            send["done"] = send["moved"] == send["array"].size
        if recv is not None:
            flat = recv["array"].reshape(-1)
            flat[recv["moved"]:recv["moved"] + len(received)] = received
            recv["moved"] += len(received)
            recv["done"] = last or recv["moved"] == recv["array"].size


class EmulatedChannel:
    """One channel of pynq's ``AxiDMA`` driver."""

    def __init__(self, board: EmulatedBoard, direction: str) -> None:
        self._board = board
        self._direction = direction

    @property
    def idle(self) -> bool:
        """Whether the last transfer finished (a poll runs the clock)."""
        return self._board.channel_idle(self._direction)

    @property
    def error(self) -> bool:
        """The emulated DMA reports no errors."""
        return False

    def transfer(self, array: np.ndarray) -> None:
        """Start moving ``array`` (a view of an ``allocate`` buffer)."""
        self._board.start(self._direction, array)


class EmulatedDMA:
    """pynq's ``AxiDMA``: created on first use, it starts both channels."""

    def __init__(self, board: EmulatedBoard) -> None:
        for control in (MM2S_CONTROL, S2MM_CONTROL):
            board.write_dma(control, RUN)
        self.sendchannel = EmulatedChannel(board, "MM2S")
        self.recvchannel = EmulatedChannel(board, "S2MM")


class EmulatedIP:
    """pynq's ``DefaultIP`` of the accelerator: AXI-Lite reads and writes on the RTL."""

    def __init__(self, board: EmulatedBoard) -> None:
        self._accel = board.accel

    def read(self, offset: int = 0) -> int:
        """Read the register at byte ``offset``."""
        return self._accel.read_address(offset)[0]

    def write(self, offset: int, value: int) -> None:
        """Write the register at byte ``offset`` (pynq ignores the response)."""
        self._accel.write_address(offset, int(value))


def emulated_pynq_module(build_dir: str | Path, *, tlast: bool = True) -> types.ModuleType:
    """Return a module object to put in ``sys.modules["pynq"]``.

    Parameters
    ----------
    build_dir : str or Path
        Where the Verilated designs are cached (by their Verilog's hash).
    tlast : bool
        Whether the emulated DMA raises TLAST at the end of an MM2S transfer.
    """
    module = types.ModuleType("pynq")
    module.__doc__ = "The virtual board's pynq (stepvit.sim.pynq_emulation)."
    state: dict[str, Any] = {"buffers": [], "next_address": BUFFER_BASE}
    module.emulation = state  # tests read the board (its DDR counters) from here

    class Overlay:
        """An overlay whose bitstream is the ``stepvit_accel.v`` beside the ``.bit``."""

        def __init__(self, bitfile: str) -> None:
            verilog = Path(bitfile).parent / "stepvit_accel.v"
            if not verilog.is_file():
                raise RuntimeError(f"the virtual board needs the overlay's Verilog, {verilog}")
            library = build_library(verilog, Path(build_dir) / "verilator")
            board = EmulatedBoard(library.path, tlast=tlast,
                                  ddr_timing=ddr_timing_of(Path(bitfile).parent))
            state["board"] = board
            if board.accel.ddr_width:
                for buffer in state["buffers"]:
                    board.accel.map_memory(buffer.physical_address, buffer)
            self.ip_dict = {DMA_NAME: {"phys_addr": DMA_BASE, "addr_range": 0x10000},
                            ACCEL_NAME: {"phys_addr": ACCEL_BASE, "addr_range": 0x10000}}

        def __getattr__(self, name: str) -> object:
            drivers = {DMA_NAME: EmulatedDMA, ACCEL_NAME: EmulatedIP}
            if name not in drivers:
                raise AttributeError(name)
            driver = drivers[name](state["board"])
            setattr(self, name, driver)
            return driver

    class MMIO:
        """Registers at a physical address: only the DMA's are mapped."""

        def __init__(self, base_addr: int, length: int = 4) -> None:
            if base_addr != DMA_BASE:
                raise RuntimeError(f"the virtual board maps no device at 0x{base_addr:x}")
            self.length = length

        def read(self, offset: int = 0) -> int:
            return state["board"].read_dma(offset)

        def write(self, offset: int, value: int) -> None:
            state["board"].write_dma(offset, value)

    def allocate(shape: Any, dtype: Any = "u4", **_: Any) -> EmulatedBuffer:
        buffer = np.zeros(shape, dtype=dtype).view(EmulatedBuffer)
        buffer.physical_address = state["next_address"]
        state["next_address"] += -(-max(buffer.nbytes, 1) // PAGE_BYTES) * PAGE_BYTES
        state["buffers"].append(buffer)
        board = state.get("board")
        if board is not None and board.accel.ddr_width:
            board.accel.map_memory(buffer.physical_address, buffer)
        return buffer

    module.Overlay = Overlay
    module.MMIO = MMIO
    module.allocate = allocate
    return module


def ddr_timing_of(overlay: Path) -> tuple[int, int]:
    """Return the emulated DDR's (first-beat latency, cycles a beat) for an overlay folder.

    From the ``ddr`` figures of the board its ``overlay.json`` names, else of the board the
    simulated DDR takes by default (the PYNQ-Z2's).
    """
    import json
    import math

    from stepvit.rtl.boards import load_board
    from stepvit.sim.runner import DEFAULT_DDR_BOARD

    description = overlay / "overlay.json"
    info = json.loads(description.read_text()) if description.is_file() else {}
    board = load_board(info.get("board") or DEFAULT_DDR_BOARD)
    figures = board.memory()
    beat_bytes = int(info.get("data_width") or figures.data_width) // 8
    return figures.latency_cycles, max(1, math.ceil(beat_bytes / figures.bytes_per_cycle))


def emulated_overlay(export: Export, folder: str | Path, *, lanes: int = DEFAULT_LANES) -> Path:
    """Write an overlay folder for ``export``: its Verilog and stand-in ``.bit``/``.hwh``."""
    from stepvit.sim.bulk import generated_verilog

    folder = Path(folder)
    verilog = generated_verilog(export, folder, lanes=lanes)
    (folder / "stepvit.bit").write_text(f"virtual board: {verilog.name}\n")
    (folder / "stepvit.hwh").write_text("<virtual-board/>\n")
    return folder


def copied_overlay(overlay: str | Path, folder: str | Path) -> Path:
    """Return a virtual overlay folder holding the ``stepvit_accel.v`` of ``overlay``.

    ``overlay`` is a folder ``stepvit overlay`` wrote (its Verilog, before Vivado); the
    copy gets stand-in ``.bit``/``.hwh`` files so that the driver's file checks pass.
    """
    import shutil

    from stepvit.model.export.errors import StepvitError

    verilog = Path(overlay) / "stepvit_accel.v"
    if not verilog.is_file():
        raise StepvitError(f"--emulate --overlay {overlay}: no stepvit_accel.v there "
                           f"(`stepvit overlay` writes it)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(verilog, folder / "stepvit_accel.v")
    description = Path(overlay) / "overlay.json"
    if description.is_file():  # a ddr overlay says so there, as on a board
        shutil.copyfile(description, folder / "overlay.json")
    (folder / "stepvit.bit").write_text(f"virtual board: {verilog}\n")
    (folder / "stepvit.hwh").write_text("<virtual-board/>\n")
    return folder


@contextmanager
def emulated_pynq(build_dir: str | Path, *, tlast: bool = True) -> Iterator[types.ModuleType]:
    """Put the virtual board's ``pynq`` in ``sys.modules`` while the block runs.

    Also gives the process what the driver checks a board process has: ``XILINX_XRT`` and
    root (``os.geteuid`` answers 0).
    """
    module = emulated_pynq_module(build_dir, tlast=tlast)
    with mock.patch.dict(sys.modules, {"pynq": module}), \
            mock.patch.dict(os.environ, {"XILINX_XRT": "virtual-board"}), \
            mock.patch.object(os, "geteuid", lambda: 0):
        yield module
