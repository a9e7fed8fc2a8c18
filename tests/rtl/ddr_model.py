"""A DDR model behind AXI read channels for Amaranth's simulator, shared by the tests of
the burst reader, the tile buffer and the weight loader."""

from __future__ import annotations

from collections import deque

import numpy as np

#: Default chance a cycle's ``arready`` is high (random backpressure on requests).
ARREADY_RATE = 0.7
#: Default chance a due beat is held back a cycle (random gaps in ``rvalid``).
RVALID_GAP = 0.1
#: The ``rresp`` of an injected error (SLVERR).
SLVERR = 0b10


class DdrModel:
    """A byte memory behind AXI read channels: each burst's beats start ``latency`` cycles
    after its request is taken and follow one per ``interval`` cycles, in order;
    ``arready`` is high with chance ``arready_rate`` and a due beat waits a cycle with
    chance ``rvalid_gap``; ``bad`` byte addresses answer SLVERR."""

    def __init__(self, memory: np.ndarray, beat_bytes: int, *, latency: int, interval: int,
                 seed: int, bad: tuple[int, ...] = (), arready_rate: float = ARREADY_RATE,
                 rvalid_gap: float = RVALID_GAP) -> None:
        self.memory, self.beat_bytes = memory, beat_bytes
        self.latency, self.interval = latency, interval
        self.rng = np.random.default_rng(seed)
        self.bad = bad
        self.arready_rate, self.rvalid_gap = arready_rate, rvalid_gap
        self.beats: deque[tuple[int, int, bool]] = deque()  # (due cycle, address, last)
        self.bursts: list[tuple[int, int, int, int]] = []  # (address, arlen, arsize, burst)
        self.next_free = 0

    def beat_data(self, address: int) -> int:
        chunk = self.memory[address:address + self.beat_bytes]
        return int.from_bytes(chunk.tobytes(), "little")

    def cycle(self, ctx, port, cycle: int) -> None:
        """Drive ``port``'s AXI read channels for one cycle (before the clock edge)."""
        arready = int(self.rng.random() < self.arready_rate)
        ctx.set(port.arready, arready)
        due = self.beats and self.beats[0][0] <= cycle
        if due and self.rng.random() >= self.rvalid_gap:
            _, address, last = self.beats[0]
            ctx.set(port.rvalid, 1)
            ctx.set(port.rdata, self.beat_data(address))
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
                self.beats.append((start + i * self.interval,
                                   address + i * self.beat_bytes, i == length - 1))
            self.next_free = start + length * self.interval
        if ctx.get(port.rvalid) and ctx.get(port.rready):
            self.beats.popleft()


def expected_words(memory: np.ndarray, base: int, words: int, word_bytes: int) -> list:
    """The ``words`` little-endian words of ``word_bytes`` bytes from ``base``."""
    return [int.from_bytes(memory[base + i * word_bytes:base + (i + 1) * word_bytes].tobytes(),
                           "little") for i in range(words)]
