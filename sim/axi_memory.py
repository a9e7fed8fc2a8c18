"""A simulated DDR behind an AXI4 read port, for cocotb: a board's latency and bandwidth.

:class:`AxiReadMemory` serves the read channels (``ar*``, ``r*``, under a prefix such as
``m_axi_``) of a DUT's AXI master from a byte buffer, with the figures of a board's
``board.yaml`` ``ddr`` section (:meth:`AxiReadMemory.from_board`):

- **Latency**: a burst's first beat is offered ``latency_cycles`` cycles after the cycle its
  address is accepted (1: the next cycle), whatever the bursts before it: requests that run
  ahead have their latencies overlap, as a pipelined DDR controller's do.
- **Bandwidth**: a bucket of byte credits that fills by ``bytes_per_cycle`` each cycle (up to
  one beat's worth) and that each beat empties by its bytes: a beat of 8 bytes every cycle at
  8 bytes a cycle, a 16-byte beat every second cycle.
- **In order**: bursts are served in the order they were accepted (one ID), each beat's
  ``rlast`` on its burst's last beat, ``rresp`` OKAY, or SLVERR on a beat whose address was
  given to :meth:`AxiReadMemory.inject_error`.
- **Address channel**: ``arready`` is high unless ``max_outstanding`` bursts are waiting or
  the optional ``arready_pattern`` says to hold it low (a throttled interconnect).
- **Counters** for a bench to report: beats served, and the cycles the master waited
  (``rready`` high, a burst accepted and not yet served, ``rvalid`` low), split by their
  cause: a burst's latency or the bandwidth.
- **Protocol checks**: a burst that is not INCR, whose beat is not the port's width, or that
  crosses a 4 KB boundary is recorded in :attr:`AxiReadMemory.violations`.

Why not ``cocotbext.axi.AxiRamRead``: its read process takes one burst at a time, reads each
beat through an awaited ``target.read`` and sends it before it takes the next address, so a
latency slept there would be paid again for every burst, after the data of the one before,
where a memory that accepts requests ahead overlaps them (the property
:class:`~stepvit.rtl.axi_reader.AxiBurstReader` is built for). Its pause generators run on
a fixed pattern of cycles, blind to when an address was accepted, so they can give a
bandwidth but not a latency counted from the request; and it needs ``arid``/``rid``, which
the reader does not have. A model of one loop a cycle is shorter than that wrapper would be.

Each cycle the model drives its signals at the clock's falling edge and reads the master's
once they have settled (``ReadOnly``): those are the values the next rising edge registers,
so a handshake is ``valid & ready`` as read there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from stepvit.rtl.boards import Board, DdrFigures

#: AXI burst type INCR, response codes OKAY and SLVERR.
BURST_INCR = 0b01
RESP_OKAY = 0b00
RESP_SLVERR = 0b10
#: AXI bursts may not cross a 4 KB boundary.
BOUNDARY = 4096


@dataclass
class Burst:
    """One accepted read burst: its first beat's address, beats, and when it may start."""

    address: int
    beats: int
    ready_cycle: int
    served: int = 0


@dataclass
class MemoryCounters:
    """What the memory did, for a bench to report.

    Attributes
    ----------
    bursts : int
        Addresses accepted.
    beats : int
        Beats handed over (``rvalid & rready``).
    latency_stall_cycles : int
        Cycles the master waited with the head burst still inside its latency.
    bandwidth_stall_cycles : int
        Cycles the master waited for the bandwidth's credits (the burst's latency past).
    first_request_cycle, last_beat_cycle : int or None
        The cycles of the first address accepted and of the last beat handed over.
    """

    bursts: int = 0
    beats: int = 0
    latency_stall_cycles: int = 0
    bandwidth_stall_cycles: int = 0
    first_request_cycle: int | None = None
    last_beat_cycle: int | None = None

    @property
    def stall_cycles(self) -> int:
        """Cycles the master waited for data, whatever the cause."""
        return self.latency_stall_cycles + self.bandwidth_stall_cycles


@dataclass
class AxiReadMemory:
    """A byte buffer served over a DUT's AXI read channels, with a latency and a bandwidth.

    Parameters
    ----------
    dut : cocotb handle
        The design; its signals ``{prefix}arvalid``, ``arready``, ``araddr``, ``arlen``,
        ``arsize``, ``arburst``, ``rvalid``, ``rready``, ``rdata``, ``rresp``, ``rlast``.
    clock : cocotb handle
        The clock the channels run on.
    memory : numpy.ndarray
        ``uint8`` bytes; byte ``a`` of the buffer is the bus's byte address ``a``.
    data_width : int
        Bits of a beat (the DUT's ``rdata``).
    latency_cycles : int
        Cycles from an address accepted to its burst's first beat offered (at least 1).
    bytes_per_cycle : float
        Average bytes a cycle the memory hands over (at most a beat).
    prefix : str
        The channels' signal name prefix.
    max_outstanding : int or None
        Bursts accepted and not yet served beyond which ``arready`` drops; ``None``: no limit.
    arready_pattern : iterator of bool, optional
        One value a cycle: ``False`` holds ``arready`` low that cycle.
    """

    dut: Any
    clock: Any
    memory: np.ndarray
    data_width: int
    latency_cycles: int
    bytes_per_cycle: float
    prefix: str = "m_axi_"
    max_outstanding: int | None = None
    arready_pattern: Iterator[bool] | None = None
    counters: MemoryCounters = field(default_factory=MemoryCounters)
    violations: list[str] = field(default_factory=list)
    error_addresses: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.latency_cycles < 1:
            raise ValueError(f"latency_cycles must be at least 1, not {self.latency_cycles}")
        if not 0 < self.bytes_per_cycle <= self.beat_bytes:
            raise ValueError(f"bytes_per_cycle must be in (0, {self.beat_bytes}] (a beat), "
                             f"not {self.bytes_per_cycle}")
        self.memory = np.asarray(self.memory, dtype=np.uint8)
        self._queue: deque[Burst] = deque()
        self._credit = float(self.beat_bytes)
        self._arready = self._rvalid = False
        #: The cycle under way, counted from the first falling edge :meth:`run` met.
        self.cycle = 0

    @classmethod
    def from_board(cls, board: Board | DdrFigures, dut: Any, clock: Any, memory: np.ndarray,
                   **options: Any) -> AxiReadMemory:
        """Return the memory with a board's ``ddr`` figures: width, latency and bandwidth.

        ``options`` are the other parameters (``prefix``, ``max_outstanding``,
        ``arready_pattern``).
        """
        ddr = board.ddr if isinstance(board, Board) else board
        return cls(dut, clock, memory, data_width=ddr.data_width,
                   latency_cycles=ddr.latency_cycles, bytes_per_cycle=ddr.bytes_per_cycle,
                   **options)

    @property
    def beat_bytes(self) -> int:
        """Bytes of one beat."""
        return self.data_width // 8

    def inject_error(self, address: int) -> None:
        """Answer the beat at byte ``address`` (rounded down to its beat) with SLVERR."""
        self.error_addresses.add(address - address % self.beat_bytes)

    def _signal(self, name: str) -> Any:
        return getattr(self.dut, self.prefix + name)

    def _accept(self) -> None:
        """Queue the burst on the address channel, and check it against the bus's rules."""
        address = int(self._signal("araddr").value)
        beats = int(self._signal("arlen").value) + 1
        size = 1 << int(self._signal("arsize").value)
        where = f"burst at {address:#x} of {beats} beats"
        if int(self._signal("arburst").value) != BURST_INCR:
            self.violations.append(f"{where}: not INCR")
        if size != self.beat_bytes:
            self.violations.append(f"{where}: beats of {size} bytes on a "
                                   f"{self.beat_bytes}-byte port")
        if address % BOUNDARY + beats * self.beat_bytes > BOUNDARY:
            self.violations.append(f"{where}: crosses a 4 KB boundary")
        self._queue.append(Burst(address - address % self.beat_bytes, beats,
                                 self.cycle + self.latency_cycles))
        self.counters.bursts += 1
        if self.counters.first_request_cycle is None:
            self.counters.first_request_cycle = self.cycle

    def _drive(self) -> None:
        """Drive this cycle's ``arready`` and the head burst's next beat, if it is due.

        A beat is due once its burst's latency is past and the credits cover its bytes.
        """
        room = self.max_outstanding is None or len(self._queue) < self.max_outstanding
        allowed = True if self.arready_pattern is None else next(self.arready_pattern, True)
        self._arready = room and allowed
        self._signal("arready").value = int(self._arready)
        head = self._queue[0] if self._queue else None
        self._rvalid = (head is not None and head.ready_cycle <= self.cycle
                        and self._credit >= self.beat_bytes)
        self._signal("rvalid").value = int(self._rvalid)
        if not self._rvalid:
            return
        address = head.address + head.served * self.beat_bytes
        data = self.memory[address:address + self.beat_bytes]
        if len(data) < self.beat_bytes:
            self.violations.append(f"beat at {address:#x}: past the memory's "
                                   f"{len(self.memory)} bytes")
            data = np.zeros(self.beat_bytes, dtype=np.uint8)
        self._signal("rdata").value = int.from_bytes(data.tobytes(), "little")
        self._signal("rresp").value = (RESP_SLVERR if address in self.error_addresses
                                       else RESP_OKAY)
        self._signal("rlast").value = int(head.served == head.beats - 1)

    async def run(self) -> None:
        """Serve the channels, a cycle at a time, for as long as the simulation runs.

        Each cycle: drive this cycle's values at the falling edge, read the master's once
        they settle, and count the handshakes the next rising edge registers.
        """
        while True:
            await FallingEdge(self.clock)
            self._drive()
            await ReadOnly()
            if self._arready and int(self._signal("arvalid").value):
                self._accept()
            rready = int(self._signal("rready").value)
            if self._rvalid and rready:
                head = self._queue[0]
                head.served += 1
                self._credit -= self.beat_bytes
                self.counters.beats += 1
                self.counters.last_beat_cycle = self.cycle
                if head.served == head.beats:
                    self._queue.popleft()
            elif rready and self._queue and not self._rvalid:
                if self._queue[0].ready_cycle > self.cycle:
                    self.counters.latency_stall_cycles += 1
                else:
                    self.counters.bandwidth_stall_cycles += 1
            self._credit = min(self._credit + self.bytes_per_cycle, float(self.beat_bytes))
            self.cycle += 1


__all__ = ["AxiReadMemory", "BOUNDARY", "BURST_INCR", "Burst", "MemoryCounters",
           "RESP_OKAY", "RESP_SLVERR"]
