"""DDR models behind AXI read and write channels, for Amaranth's simulator.

The read model serves the tests of the burst reader, the tile buffer and the weight
loader; the write model the burst writer's. :func:`~stepvit.rtl.core_sim.simulate_core`
puts both behind a core whose stream is in DDR.
"""

from __future__ import annotations

from collections import deque

import numpy as np

#: Default chance a cycle's ``arready`` is high (random backpressure on requests).
ARREADY_RATE = 0.7
#: Default chance a due beat is held back a cycle (random gaps in ``rvalid``).
RVALID_GAP = 0.1
#: The ``rresp`` of an injected error (SLVERR).
SLVERR = 0b10
#: AXI bursts may not cross a 4 KB boundary.
BOUNDARY = 4096


class DdrModel:
    """A byte memory behind AXI read channels.

    Each burst's beats start ``latency`` cycles after its request is taken and follow one
    per ``interval`` cycles, in order; ``arready`` is high with chance ``arready_rate`` and
    a due beat waits a cycle with chance ``rvalid_gap``; ``bad`` byte addresses answer
    SLVERR. A burst's bytes are read as its request is taken (a read overtakes every write
    not yet answered, as AXI allows: a master must wait for a write's response before it
    reads what the write wrote).
    """

    def __init__(self, memory: np.ndarray, beat_bytes: int, *, latency: int, interval: int,
                 seed: int, bad: tuple[int, ...] = (), arready_rate: float = ARREADY_RATE,
                 rvalid_gap: float = RVALID_GAP) -> None:
        self.memory, self.beat_bytes = memory, beat_bytes
        self.latency, self.interval = latency, interval
        self.rng = np.random.default_rng(seed)
        self.bad = bad
        self.arready_rate, self.rvalid_gap = arready_rate, rvalid_gap
        # (due cycle, address, last, data read as the request was taken)
        self.beats: deque[tuple[int, int, bool, int]] = deque()
        self.bursts: list[tuple[int, int, int, int]] = []  # (address, arlen, arsize, burst)
        self.next_free = 0

    def beat_data(self, address: int) -> int:
        """Return the beat at byte ``address``, little-endian."""
        chunk = self.memory[address:address + self.beat_bytes]
        return int.from_bytes(chunk.tobytes(), "little")

    def cycle(self, ctx, port, cycle: int) -> None:
        """Drive ``port``'s AXI read channels for one cycle (before the clock edge)."""
        arready = int(self.rng.random() < self.arready_rate)
        ctx.set(port.arready, arready)
        due = self.beats and self.beats[0][0] <= cycle
        if due and self.rng.random() >= self.rvalid_gap:
            _, address, last, data = self.beats[0]
            ctx.set(port.rvalid, 1)
            ctx.set(port.rdata, data)
            ctx.set(port.rlast, int(last))
            ctx.set(port.rresp, SLVERR if address in self.bad else 0)
        else:
            ctx.set(port.rvalid, 0)
        if ctx.get(port.arvalid) and arready:
            address, length = ctx.get(port.araddr), ctx.get(port.arlen) + 1
            self.bursts.append((address, length - 1, ctx.get(port.arsize),
                                ctx.get(port.arburst)))
            start = max(cycle + self.latency, self.next_free)
            for i in range(length):
                where = address + i * self.beat_bytes
                self.beats.append((start + i * self.interval, where, i == length - 1,
                                   self.beat_data(where)))
            self.next_free = start + length * self.interval
        if ctx.get(port.rvalid) and ctx.get(port.rready):
            self.beats.popleft()


class DdrWriteModel:
    """A byte memory behind AXI write channels.

    ``awready`` and ``wready`` are high with chance ``ready_rate`` each, independently (a
    beat may come before its burst's address, as AXI allows); the beats go to the bursts in
    order, and a burst's response is offered ``latency`` cycles after its last beat, in
    order, OKAY, or SLVERR if one of its beats' addresses is in ``bad``. A burst's bytes
    land in the memory only as its response is offered (AXI promises a write visible to a
    read only after its response, so a master that reads before it reads what was there
    before). Whatever breaks the bus's rules is recorded in ``violations``. With
    ``strobes`` a beat writes only the bytes its ``wstrb`` sets (else a beat that does not
    write every byte is a violation).
    """

    def __init__(self, memory: np.ndarray, beat_bytes: int, *, latency: int, seed: int,
                 bad: tuple[int, ...] = (), ready_rate: float = ARREADY_RATE,
                 max_burst: int = 256, strobes: bool = False) -> None:
        self.memory, self.beat_bytes = memory, beat_bytes
        self.strobes = strobes
        self.latency, self.bad, self.ready_rate = latency, bad, ready_rate
        self.max_burst = max_burst
        self.rng = np.random.default_rng(seed)
        self.bursts: list[tuple[int, int, int, int]] = []  # (address, awlen, awsize, burst)
        self.open: deque[list] = deque()  # [address, beats, beats taken, error, bytes]
        self.data: deque[tuple[int, int, int]] = deque()  # beats before their address
        # (due cycle, bresp, the burst's (address, bytes) to land as the response is offered)
        self.responses: deque[tuple[int, int, list]] = deque()
        self.violations: list[str] = []
        self.written = 0

    def _match(self, cycle: int) -> None:
        """Write the waiting beats into the bursts they belong to, in order."""
        while self.open and self.data:
            burst = self.open[0]
            address, beats, taken = burst[:3]
            data, strobe, last = self.data.popleft()
            where = address + taken * self.beat_bytes
            if strobe != (1 << self.beat_bytes) - 1 and not self.strobes:
                self.violations.append(f"beat at {where:#x}: wstrb {strobe:#x}")
            if last != (taken == beats - 1):
                self.violations.append(f"beat at {where:#x}: wlast {last} on beat {taken} "
                                       f"of {beats}")
            burst[4].append((where, np.frombuffer(data.to_bytes(self.beat_bytes, "little"),
                                                  dtype=np.uint8),
                             np.array([strobe >> i & 1 for i in range(self.beat_bytes)],
                                      dtype=bool)))
            self.written += 1
            burst[3] |= where in self.bad
            burst[2] = taken + 1
            if burst[2] == beats:
                self.open.popleft()
                self.responses.append((cycle + self.latency, SLVERR if burst[3] else 0,
                                       burst[4]))

    def cycle(self, ctx, port, cycle: int) -> None:
        """Drive ``port``'s AXI write channels for one cycle (before the clock edge)."""
        awready = int(self.rng.random() < self.ready_rate)
        wready = int(self.rng.random() < self.ready_rate)
        ctx.set(port.awready, awready)
        ctx.set(port.wready, wready)
        due = self.responses and self.responses[0][0] <= cycle
        if due:  # the burst's bytes land as its response is offered (once)
            for where, data, strobe in self.responses[0][2]:
                self.memory[where:where + self.beat_bytes][strobe] = data[strobe]
            self.responses[0][2].clear()
        ctx.set(port.bvalid, int(bool(due)))
        ctx.set(port.bresp, self.responses[0][1] if due else 0)
        if due and ctx.get(port.bready):
            self.responses.popleft()
        if ctx.get(port.awvalid) and awready:
            address, awlen = ctx.get(port.awaddr), ctx.get(port.awlen)
            size, kind = ctx.get(port.awsize), ctx.get(port.awburst)
            self.bursts.append((address, awlen, size, kind))
            if awlen + 1 > self.max_burst:
                self.violations.append(f"burst at {address:#x}: {awlen + 1} beats")
            if address // BOUNDARY != (address + (awlen + 1) * self.beat_bytes - 1) // BOUNDARY:
                self.violations.append(f"burst at {address:#x}: crosses a 4 KB boundary")
            if 1 << size != self.beat_bytes or kind != 0b01:
                self.violations.append(f"burst at {address:#x}: size {size}, type {kind}")
            self.open.append([address, awlen + 1, 0, False, []])
        if ctx.get(port.wvalid) and wready:
            self.data.append((ctx.get(port.wdata), ctx.get(port.wstrb), ctx.get(port.wlast)))
        self._match(cycle)


def expected_words(memory: np.ndarray, base: int, words: int, word_bytes: int) -> list:
    """Return the ``words`` little-endian words of ``word_bytes`` bytes from ``base``."""
    return [int.from_bytes(memory[base + i * word_bytes:base + (i + 1) * word_bytes].tobytes(),
                           "little") for i in range(words)]
