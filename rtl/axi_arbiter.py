"""One AXI4 read port shared by several read masters, a burst at a time.

A design that streams both the core's weight tiles and the stem's tap tiles during compute
(docs/ddr-dataflow.md, "Streaming the weights during compute") has two readers on one
``m_axi``: the stem of the next image fetches while the blocks of this one do. This
arbiter gives them the port:

- **Address channel**: one burst at a time, round robin: a reader that has just been
  granted a burst gives way to the other while that one asks, so neither waits more than
  one burst of the other per burst of its own (a fixed priority would let the core's
  tiles, long runs of many bursts, hold the stem's back for a whole tile). A request once
  on the port stays there, unchanged, until accepted (the AXI rule): the grant is held.
- **Owners**: each accepted burst's reader goes into a small FIFO. A single-ID master's
  responses come back in the order of its requests, so the R channel's beats belong to
  the reader at the FIFO's head; the head is popped at the beat with ``rlast``. A burst is
  granted only while the FIFO has room (``depth`` bursts outstanding at most).
- **Data channel**: ``rvalid`` goes to the head's reader only; ``rready`` is that
  reader's; ``rdata``, ``rresp`` and ``rlast`` go to every reader (only the owner sees
  ``rvalid``).

Built alone and tested against the DDR model of ``rtl/ddr_model.py``
(tests/rtl/test_axi_arbiter.py); in the core of a design with
``stream_weights=True, stem_chunk_major=True``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

#: The read channels' members of a master, with their flow as the master sees them.
READ_PORTS = {"arvalid": Out, "arready": In, "araddr": Out, "arlen": Out, "arsize": Out,
              "arburst": Out, "rvalid": In, "rready": Out, "rdata": In, "rresp": In,
              "rlast": In}


class AxiReadArbiter(wiring.Component):
    """Share one AXI read port between ``readers`` masters, a burst at a time.

    Parameters
    ----------
    readers : int
        Read masters (two or more).
    data_width, addr_width : int
        Bits of a beat and of a byte address.
    depth : int
        Bursts that may be outstanding (accepted, ``rlast`` not yet seen).

    Members
    -------
    r<i>_<name> : the read channels of master ``i``, as a slave sees them
    <name> : the shared port's read channels, as a master drives them
        (``arvalid``, ``arready``, ``araddr``, ``arlen``, ``arsize``, ``arburst``,
        ``rvalid``, ``rready``, ``rdata``, ``rresp``, ``rlast``).
    """

    def __init__(self, *, readers: int = 2, data_width: int = 64, addr_width: int = 32,
                 depth: int = 4) -> None:
        if readers < 2:
            raise ValueError(f"readers must be at least 2, not {readers}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._readers, self._depth = readers, depth
        widths = {"araddr": addr_width, "arlen": 8, "arsize": 3, "arburst": 2,
                  "rdata": data_width, "rresp": 2}
        master = {name: flow(widths.get(name, 1)) for name, flow in READ_PORTS.items()}
        slaves = {f"r{index}_{name}": member.flip()
                  for index in range(readers) for name, member in master.items()}
        super().__init__({**master, **slaves})

    def port(self, index: int, name: str) -> Signal:
        """Return member ``name`` of reader ``index``'s port."""
        return getattr(self, f"r{index}_{name}")

    def elaborate(self, platform: object) -> Module:
        """Build the grant (held, round robin), the owners' FIFO and the R routing."""
        m = Module()
        readers = range(self._readers)
        m.submodules.owners = owners = SyncFIFO(width=max((self._readers - 1).bit_length(), 1),
                                                depth=self._depth)
        held = Signal()  # a request on the port, not yet accepted: its grant stays
        owner = Signal(range(self._readers))
        last = Signal(range(self._readers), init=self._readers - 1)
        chosen = Signal(range(self._readers))
        # round robin: the first asking reader after the one granted last
        # (the last assignment wins: the nearest after ``last`` is written last)
        for offset in reversed(range(1, self._readers + 1)):
            index = Array(Const((before + offset) % self._readers, len(last))
                          for before in readers)[last]
            with m.If(Array(self.port(i, "arvalid") for i in readers)[index]):
                m.d.comb += chosen.eq(index)
        grant = Signal(range(self._readers))
        m.d.comb += grant.eq(Mux(held, owner, chosen))
        asking = Array(self.port(i, "arvalid") for i in readers)[grant]
        m.d.comb += self.arvalid.eq(asking & owners.w_rdy)
        for name in ("araddr", "arlen", "arsize", "arburst"):
            m.d.comb += getattr(self, name).eq(
                Array(self.port(i, name) for i in readers)[grant])
        accepted = self.arvalid & self.arready
        for i in readers:
            m.d.comb += self.port(i, "arready").eq(
                (grant == i) & self.arready & owners.w_rdy)
        m.d.comb += [owners.w_en.eq(accepted), owners.w_data.eq(grant)]
        with m.If(accepted):
            m.d.sync += [held.eq(0), last.eq(grant)]
        with m.Elif(self.arvalid):
            m.d.sync += [held.eq(1), owner.eq(grant)]

        head = owners.r_data
        for i in readers:
            m.d.comb += [self.port(i, "rvalid").eq(self.rvalid & owners.r_rdy & (head == i))]
            for name in ("rdata", "rresp", "rlast"):
                m.d.comb += self.port(i, name).eq(getattr(self, name))
        m.d.comb += [
            self.rready.eq(owners.r_rdy & Array(self.port(i, "rready") for i in readers)[head]),
            owners.r_en.eq(self.rvalid & self.rready & self.rlast),
        ]
        return m


__all__ = ["AxiReadArbiter", "READ_PORTS"]
