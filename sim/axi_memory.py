"""A simulated DDR behind an AXI4 read port, for cocotb: a board's latency and bandwidth.

(Its write port, :class:`AxiWriteMemory`, is described there.)

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
class AxiSlaveModel:
    """What the simulated memory's read and write ports share.

    The buffer, a board's figures, the bus's rules and the injected errors.

    Parameters
    ----------
    dut : cocotb handle
        The design, whose channels' signals are named ``{prefix}`` and their AXI names.
    clock : cocotb handle
        The clock the channels run on.
    memory : numpy.ndarray
        ``uint8`` bytes; byte ``a`` of the buffer is the bus's byte address ``a``.
    data_width : int
        Bits of a beat.
    latency_cycles : int
        Cycles a burst waits (at least 1): for its first beat (read), or for its response
        after its last beat (write).
    bytes_per_cycle : float
        Average bytes a cycle the port moves (at most a beat).
    prefix : str
        The channels' signal name prefix.
    max_outstanding : int or None
        Bursts accepted and not yet done beyond which the address channel's ready drops;
        ``None``: no limit.
    """

    dut: Any
    clock: Any
    memory: np.ndarray
    data_width: int
    latency_cycles: int
    bytes_per_cycle: float
    prefix: str = "m_axi_"
    max_outstanding: int | None = None
    violations: list[str] = field(default_factory=list)
    error_addresses: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.latency_cycles < 1:
            raise ValueError(f"latency_cycles must be at least 1, not {self.latency_cycles}")
        if not 0 < self.bytes_per_cycle <= self.beat_bytes:
            raise ValueError(f"bytes_per_cycle must be in (0, {self.beat_bytes}] (a beat), "
                             f"not {self.bytes_per_cycle}")
        self.memory = np.asarray(self.memory, dtype=np.uint8)
        self._credit = float(self.beat_bytes)
        #: The cycle under way, counted from the first falling edge ``run`` met.
        self.cycle = 0

    @classmethod
    def from_board(cls, board: Board | DdrFigures, dut: Any, clock: Any, memory: np.ndarray,
                   **options: Any) -> Any:
        """Return the memory with a board's ``ddr`` figures: width, latency and bandwidth.

        ``options`` are the other parameters (``prefix``, ``max_outstanding``, the address
        channel's ready pattern).
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
        """Answer SLVERR for the beat that holds byte ``address``.

        Read, that beat is answered so; written, the burst that writes it.
        """
        self.error_addresses.add(address - address % self.beat_bytes)

    def _signal(self, name: str) -> Any:
        return getattr(self.dut, self.prefix + name)

    def _next_cycle(self) -> None:
        """End the cycle: the bandwidth's credits grow (up to a beat's), the count moves."""
        self._credit = min(self._credit + self.bytes_per_cycle, float(self.beat_bytes))
        self.cycle += 1

    def _check_burst(self, where: str, kind: int, size: int, address: int,
                     beats: int) -> None:
        """Record what breaks the bus's rules in a burst (not INCR, beats not the port's).

        Or one across 4 KB. The burst: ``beats`` beats of ``size`` bytes from
        ``address``, of type ``kind``.
        """
        if kind != BURST_INCR:
            self.violations.append(f"{where}: not INCR")
        if size != self.beat_bytes:
            self.violations.append(f"{where}: beats of {size} bytes on a "
                                   f"{self.beat_bytes}-byte port")
        if address % BOUNDARY + beats * self.beat_bytes > BOUNDARY:
            self.violations.append(f"{where}: crosses a 4 KB boundary")


@dataclass
class AxiReadMemory(AxiSlaveModel):
    """A byte buffer served over a DUT's AXI read channels, with a latency and a bandwidth.

    Parameters
    ----------
    dut, clock, memory, data_width, latency_cycles, bytes_per_cycle, prefix,
    max_outstanding :
        As :class:`AxiSlaveModel`'s: the signals ``{prefix}arvalid``, ``arready``,
        ``araddr``, ``arlen``, ``arsize``, ``arburst``, ``rvalid``, ``rready``, ``rdata``,
        ``rresp``, ``rlast``; the latency from an address accepted to its burst's first
        beat offered; the bandwidth the memory hands beats over at.
    arready_pattern : iterator of bool, optional
        One value a cycle: ``False`` holds ``arready`` low that cycle.
    """

    arready_pattern: Iterator[bool] | None = None
    counters: MemoryCounters = field(default_factory=MemoryCounters)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._queue: deque[Burst] = deque()
        self._arready = self._rvalid = False

    def _accept(self) -> None:
        """Queue the burst on the address channel, and check it against the bus's rules."""
        address = int(self._signal("araddr").value)
        beats = int(self._signal("arlen").value) + 1
        size = 1 << int(self._signal("arsize").value)
        self._check_burst(f"burst at {address:#x} of {beats} beats",
                          int(self._signal("arburst").value), size, address, beats)
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
            self._next_cycle()


@dataclass
class WriteCounters:
    """What the memory's write port did, for a bench to report.

    Attributes
    ----------
    bursts, beats, responses : int
        Addresses accepted, beats taken (``wvalid & wready``), responses taken
        (``bvalid & bready``).
    bandwidth_stall_cycles : int
        Cycles a beat was offered and held back for the bandwidth's credits.
    response_wait_cycles : int
        Cycles the master waited for a response with every accepted burst's beats taken
        (``bready`` high, ``bvalid`` low): the responses' latency.
    last_response_cycle : int or None
        The cycle of the last response taken.
    """

    bursts: int = 0
    beats: int = 0
    responses: int = 0
    bandwidth_stall_cycles: int = 0
    response_wait_cycles: int = 0
    last_response_cycle: int | None = None


@dataclass
class AxiWriteMemory(AxiSlaveModel):
    """A byte buffer written over a DUT's AXI write channels, with a latency and a bandwidth.

    - **Data after its address**: ``wready`` is high only while an accepted burst has beats
      to take (a slave may wait for the address; a master must not wait for ``wready``
      before its address) and the credits cover a beat: the bandwidth, a bucket of byte
      credits as :class:`AxiReadMemory`'s.
    - **Responses**: a burst's response is offered ``latency_cycles`` cycles after its last
      beat is taken, in order (one ID): OKAY, or SLVERR if one of its beats' addresses was
      given to :meth:`inject_error` (its beats are written all the same).
    - **Address channel**: ``awready`` is high unless ``max_outstanding`` bursts are
      accepted and not yet answered, or ``awready_pattern`` holds it low this cycle.
    - **Protocol checks** in :attr:`violations`: a burst that is not INCR, whose beats are
      not the port's width, that crosses a 4 KB boundary, or runs past the buffer; a beat
      whose ``wlast`` is not its burst's last, or whose ``wstrb`` leaves a byte out (with
      ``strobes``, a beat writes only the bytes its ``wstrb`` sets: a stem map's chunk).

    Parameters
    ----------
    dut, clock, memory, data_width, latency_cycles, bytes_per_cycle, prefix,
    max_outstanding :
        As :class:`AxiSlaveModel`'s: the signals ``{prefix}awvalid``, ``awready``,
        ``awaddr``, ``awlen``, ``awsize``, ``awburst``, ``wvalid``, ``wready``, ``wdata``,
        ``wstrb``, ``wlast``, ``bvalid``, ``bready``, ``bresp``; the latency from a
        burst's last beat to its response offered; the bandwidth beats are taken at.
    awready_pattern : iterator of bool, optional
        One value a cycle: ``False`` holds ``awready`` low that cycle.
    strobes : bool
        Honour ``wstrb`` (above); default ``False``.
    """

    awready_pattern: Iterator[bool] | None = None
    strobes: bool = False
    counters: WriteCounters = field(default_factory=WriteCounters)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._open: deque[Burst] = deque()  # accepted, beats still to take
        self._answers: deque[tuple[int, int]] = deque()  # (due cycle, bresp)
        self._failed = False  # the head open burst has a beat at an error address
        self._awready = self._wready = self._bvalid = False

    def _accept(self) -> None:
        """Open the burst on the address channel, and check it against the bus's rules."""
        address = int(self._signal("awaddr").value)
        beats = int(self._signal("awlen").value) + 1
        size = 1 << int(self._signal("awsize").value)
        where = f"write burst at {address:#x} of {beats} beats"
        self._check_burst(where, int(self._signal("awburst").value), size, address, beats)
        if address + beats * self.beat_bytes > len(self.memory):
            self.violations.append(f"{where}: past the memory's {len(self.memory)} bytes")
        self._open.append(Burst(address - address % self.beat_bytes, beats, self.cycle))
        self.counters.bursts += 1

    def _take(self) -> None:
        """Write the beat on the data channel into the head burst, and check it."""
        head = self._open[0]
        address = head.address + head.served * self.beat_bytes
        last = int(self._signal("wlast").value)
        if last != (head.served == head.beats - 1):
            self.violations.append(f"beat at {address:#x}: wlast {last} on beat "
                                   f"{head.served + 1} of {head.beats}")
        strobe = int(self._signal("wstrb").value)
        if strobe != (1 << self.beat_bytes) - 1 and not self.strobes:
            self.violations.append(f"beat at {address:#x}: wstrb {strobe:#x}")
        if address + self.beat_bytes <= len(self.memory):
            data = np.frombuffer(int(self._signal("wdata").value).to_bytes(
                self.beat_bytes, "little"), dtype=np.uint8)
            kept = np.array([strobe >> byte & 1 for byte in range(self.beat_bytes)],
                            dtype=bool)
            self.memory[address:address + self.beat_bytes][kept] = data[kept]
        self._failed |= address in self.error_addresses
        head.served += 1
        self.counters.beats += 1
        self._credit -= self.beat_bytes
        if head.served == head.beats:
            self._open.popleft()
            self._answers.append((self.cycle + self.latency_cycles,
                                  RESP_SLVERR if self._failed else RESP_OKAY))
            self._failed = False

    def _drive(self) -> None:
        """Drive this cycle's ``awready``, ``wready`` and the head response, if it is due."""
        waiting = len(self._open) + len(self._answers)
        room = self.max_outstanding is None or waiting < self.max_outstanding
        allowed = True if self.awready_pattern is None else next(self.awready_pattern, True)
        self._awready = room and allowed
        self._signal("awready").value = int(self._awready)
        self._wready = bool(self._open) and self._credit >= self.beat_bytes
        self._signal("wready").value = int(self._wready)
        self._bvalid = bool(self._answers) and self._answers[0][0] <= self.cycle
        self._signal("bvalid").value = int(self._bvalid)
        self._signal("bresp").value = self._answers[0][1] if self._bvalid else RESP_OKAY

    async def run(self) -> None:
        """Serve the channels, a cycle at a time, for as long as the simulation runs."""
        while True:
            await FallingEdge(self.clock)
            self._drive()
            await ReadOnly()
            wvalid = int(self._signal("wvalid").value)
            if self._wready and wvalid:
                self._take()
            elif wvalid and self._open:
                self.counters.bandwidth_stall_cycles += 1
            if self._awready and int(self._signal("awvalid").value):
                self._accept()
            bready = int(self._signal("bready").value)
            if self._bvalid and bready:
                self._answers.popleft()
                self.counters.responses += 1
                self.counters.last_response_cycle = self.cycle
            elif bready and self._answers and not self._open:
                self.counters.response_wait_cycles += 1  # every beat in: the latency
            self._next_cycle()


__all__ = ["AxiReadMemory", "AxiSlaveModel", "AxiWriteMemory", "BOUNDARY", "BURST_INCR", "Burst",
           "MemoryCounters", "RESP_OKAY", "RESP_SLVERR", "WriteCounters"]
