"""An AXI4 read master that copies a run of words from DDR into an on-chip memory.

The first part of the weights-from-DDR design (docs/ddr-dataflow.md): a layer's weight tile
is a run of words at a byte address; this reads it over the AXI read channels (``ar*``,
``r*``) and writes each word into a memory port as its last beat arrives. Tested alone
against a memory model with latency and a bandwidth (tests/rtl/test_axi_reader.py); in
``stepvit_accel`` it is the weight loader's reader and the core's tile buffer's.

- **Bursts**: INCR bursts of at most ``max_burst`` beats (16 on the Zynq-7000's AXI3 HP
  ports, up to 256 on AXI4), never across a 4 KB boundary (the AXI rule).
- **Requests run ahead**: every burst is requested as soon as the previous request is
  accepted, without waiting for its data, so the memory's latency is paid once per run,
  not once per burst. The data returns in order (one ID); ``rready`` stays high while the
  run lasts, since a beat goes straight into the word being assembled.
- **Words**: ``word_width`` bits, a whole number of beats; the first beat is the word's low
  bits (little-endian, as the host lays the bytes out).
- **Errors**: a beat whose ``rresp`` is not OKAY sets ``error`` until the next ``start``;
  the run still completes (every requested beat is taken), so the bus is left clean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: AXI burst type INCR.
BURST_INCR = 0b01
#: AXI bursts may not cross a 4 KB boundary.
BOUNDARY = 4096


def check_shape(data_width: int, word_width: int, depth: int, max_burst: int) -> None:
    """Refuse a reader's shape that AXI or the word assembly cannot have.

    Raises
    ------
    ValueError
        Naming the parameter.
    """
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"data_width must be an AXI width (32-1024 bits), not {data_width}")
    if word_width < data_width or word_width % data_width:
        raise ValueError(f"word_width ({word_width}) must be a whole number of "
                         f"{data_width}-bit beats")
    if not 1 <= max_burst <= 256:
        raise ValueError(f"max_burst must be 1-256 beats, not {max_burst}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")


#: The AXI read channels' members of a reader, by their AXI names.
AXI_READ_MEMBERS = ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst",
                    "rvalid", "rready", "rdata", "rresp", "rlast")


def read_channels(addr_width: int, data_width: int) -> dict[str, wiring.Member]:
    """Return the AXI read channels' members of a read master (``arvalid`` out, ...)."""
    return {"arvalid": Out(1), "arready": In(1), "araddr": Out(addr_width),
            "arlen": Out(8), "arsize": Out(3), "arburst": Out(2), "rvalid": In(1),
            "rready": Out(1), "rdata": In(data_width), "rresp": In(2), "rlast": In(1)}


class BeatsPerWord:
    """What a master of words of whole beats knows: its beat's and its word's bits."""

    _data_width: int
    _word_width: int

    @property
    def beats_per_word(self) -> int:
        """Beats that make one word."""
        return self._word_width // self._data_width


def connect_axi(m: Module, master: wiring.Component, port_of: Callable[[str], Value],
                names: Sequence[str], prefix: str = "") -> None:
    """Connect ``master``'s AXI members ``prefix + name`` to ``port_of(name)``.

    Each in its direction, for each of ``names`` (a master's members: ``arvalid`` out,
    ``arready`` in, ...).
    """
    for name in names:
        inner, port = getattr(master, prefix + name), port_of(name)
        m.d.comb += (inner.eq(port) if master.signature.members[prefix + name].flow == In
                     else port.eq(inner))


def connect_axi_read(m: Module, reader: wiring.Component,
                     port_of: Callable[[str], Value]) -> None:
    """Connect ``reader``'s AXI read channels to ``port_of(name)``, each in its direction.

    ``reader`` has a master's members (``arvalid`` out, ``arready`` in, ...).
    """
    connect_axi(m, reader, port_of, AXI_READ_MEMBERS)


def forward_axi_read(m: Module, outer: wiring.Component, reader: wiring.Component) -> None:
    """Connect ``reader``'s AXI read channels to ``outer``'s members of the same names.

    For a component that holds a reader and has its channels as its own ports.
    """
    connect_axi_read(m, reader, lambda name: getattr(outer, name))


def assembled_word(m: Module, word: Signal, rdata: Value, *, data_width: int) -> Signal:
    """Return ``word`` with the beat ``rdata`` shifted in from the top.

    A word of whole beats, the first beat in its low bits: after its last beat the word is
    whole. :class:`AxiBurstReader`'s and :class:`~stepvit.rtl.axi_runs.AxiRunsReader`'s.
    """
    assembled = Signal.like(word)
    if len(word) == data_width:
        m.d.comb += assembled.eq(rdata)
    else:
        m.d.comb += assembled.eq(
            (word >> data_width) | (rdata << (len(word) - data_width)))
    return assembled


def burst_length(m: Module, address: Value, to_request: Value, *, beat_bytes: int,
                 max_burst: int) -> Signal:
    """Return the beats of the next burst from ``address``.

    As many as ``max_burst`` allows, as are left (``to_request``), and up to the next 4 KB
    boundary (the AXI rule); :class:`AxiBurstReader`'s and
    :class:`~stepvit.rtl.axi_runs.AxiRunsReader`'s.
    """
    boundary = Signal(range(BOUNDARY // beat_bytes + 1))
    m.d.comb += boundary.eq((BOUNDARY - address[:12]) >> (beat_bytes.bit_length() - 1))

    length = Signal(range(max_burst + 1))
    allowed = Mux(to_request < max_burst, to_request, max_burst)
    m.d.comb += length.eq(Mux(boundary < allowed, boundary, allowed))
    return length


class AxiBurstReader(BeatsPerWord, wiring.Component):
    """Read ``words`` words from byte address ``base`` into a memory, over AXI read bursts.

    Parameters
    ----------
    data_width : int
        Bits of an AXI beat (64 for a Zynq-7000 HP port, 128 for a Zynq UltraScale+ one).
    word_width : int
        Bits of a memory word: a whole number of beats.
    depth : int
        Words the memory holds (the most a run reads).
    max_burst : int
        Beats a burst may have (16 for AXI3, up to 256 for AXI4).
    addr_width : int
        Bits of a byte address.

    Members
    -------
    start : In(1)
        Pulse (while not ``busy``): read ``words`` words from ``base``.
    base : In(addr_width)
        The run's first byte, aligned to a beat.
    words : In(range(depth + 1))
        The run's words.
    busy : Out(1)
        A run is under way.
    error : Out(1)
        A beat of the last run came back with an error response.
    arvalid, arready, araddr, arlen, arsize, arburst : the read address channel
    rvalid, rready, rdata, rresp, rlast : the read data channel
    write_en, write_addr, write_data : Out
        The memory's write port: word ``write_addr`` of the run.
    """

    def __init__(self, *, data_width: int = 64, word_width: int = 64, depth: int = 1024,
                 max_burst: int = 16, addr_width: int = 32) -> None:
        check_shape(data_width, word_width, depth, max_burst)
        self._data_width, self._word_width = data_width, word_width
        self._depth, self._max_burst = depth, max_burst
        self._beat_bytes = data_width // 8
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "words": In(range(depth + 1)),
            "busy": Out(1),
            "error": Out(1),
            **read_channels(addr_width, data_width),
            "write_en": Out(1),
            "write_addr": Out(range(max(depth, 2))),
            "write_data": Out(word_width),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the request side (bursts ahead) and the data side (words from beats)."""
        m = Module()
        per_word = self.beats_per_word
        total = self._depth * per_word
        to_request = Signal(range(total + 1))  # beats not yet requested
        to_receive = Signal(range(total + 1))  # beats requested or not, not yet received
        address = Signal.like(self.araddr)
        m.d.comb += [self.arsize.eq(self._beat_bytes.bit_length() - 1),
                     self.arburst.eq(BURST_INCR), self.araddr.eq(address),
                     self.busy.eq(to_receive != 0), self.rready.eq(to_receive != 0)]

        pending = Signal()  # a request is on the channel, waiting for arready
        length, _ = request_bursts(m, address, to_request, pending, self.arready,
                                   beat_bytes=self._beat_bytes, max_burst=self._max_burst)
        m.d.comb += [self.arlen.eq(length - 1), self.arvalid.eq(pending)]

        # the data: beats into the word register, a word written as its last beat arrives
        word = Signal(self._word_width)
        beat = Signal(range(max(per_word, 2)))
        index = Signal.like(self.write_addr)
        assembled = assembled_word(m, word, self.rdata, data_width=self._data_width)
        m.d.comb += [self.write_data.eq(assembled), self.write_addr.eq(index)]
        with m.If(self.rvalid & self.rready):
            m.d.sync += [to_receive.eq(to_receive - 1), word.eq(assembled)]
            with m.If(self.rresp != 0):
                m.d.sync += self.error.eq(1)
            with m.If(beat == per_word - 1):
                m.d.comb += self.write_en.eq(1)
                m.d.sync += [beat.eq(0), index.eq(index + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        with m.If(self.start & ~self.busy):
            beats = times_constant(self.words, per_word, len(to_request))
            m.d.sync += [address.eq(self.base), to_request.eq(beats), to_receive.eq(beats),
                         pending.eq(self.words != 0), index.eq(0), beat.eq(0),
                         self.error.eq(0)]
        return m


def request_bursts(m: Module, address: Signal, to_request: Signal, pending: Signal,
                   ready: Value, *, beat_bytes: int, max_burst: int) -> tuple[Signal, Signal]:
    """Request a run's bursts one after the other, each as soon as the one before is taken.

    ``address``, ``to_request`` (beats) and ``pending`` (a burst on the address channel)
    are the run's state, which a start sets; ``ready`` is the channel's ``arready`` or
    ``awready``. Returns the burst's beats (:func:`burst_length`) and whether it is taken
    this cycle; the caller drives the channel's ``len`` and ``valid`` (``pending``).
    :class:`AxiBurstReader`'s and :class:`~stepvit.rtl.axi_writer.AxiBurstWriter`'s.
    """
    length = burst_length(m, address, to_request, beat_bytes=beat_bytes, max_burst=max_burst)
    accepted = Signal()
    m.d.comb += accepted.eq(pending & ready)
    with m.If(accepted):
        m.d.sync += [address.eq(address + (length << (beat_bytes.bit_length() - 1))),
                     to_request.eq(to_request - length),
                     pending.eq(to_request != length)]
    return length, accepted


def times_constant(value: Value, constant: int, width: int) -> Value:
    """Return ``value * constant`` modulo ``2**width`` as shifted copies added (no ``$mul``).

    A ``$mul`` by a constant that is not a power of two may be mapped to a DSP block; the
    accelerator uses none. The copies are added by :func:`tree_sum`.
    """
    if not isinstance(constant, int) or constant < 0:
        raise ValueError(f"constant must be a non-negative integer, not {constant!r}")
    terms = [(value << bit)[:width] for bit in range(constant.bit_length())
             if constant >> bit & 1]
    return tree_sum(terms, width) if terms else Const(0, width)


def tree_sum(terms: list[Value], width: int) -> Value:
    """Add ``terms`` modulo ``2**width`` as a balanced tree (the shortest adder path)."""
    while len(terms) > 1:
        paired = [(terms[i] + terms[i + 1])[:width] for i in range(0, len(terms) - 1, 2)]
        terms = paired + terms[len(terms) - len(terms) % 2:]
    return terms[0]


__all__ = ["AXI_READ_MEMBERS", "AxiBurstReader", "BOUNDARY", "BURST_INCR", "BeatsPerWord",
           "connect_axi",
           "assembled_word", "read_channels", "request_bursts",
           "burst_length", "check_shape", "connect_axi_read", "forward_axi_read", "times_constant",
           "tree_sum"]
