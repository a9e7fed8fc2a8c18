"""The core's fire stage: a chunk's input currents through its LIF lanes, spikes out.

The last stage of :class:`~stepvit.rtl.core.StepvitCore`'s pipeline. A chunk arrives with
its currents (the sum stage's totals) and the membranes, thresholds and stream values its
reads fetched; the stage charges, fires and resets the lanes
(:class:`~stepvit.rtl.lif.LIFLanes`), writes the membranes back, writes the spikes to the
pass's spike map (and, for the embedding, the spikes' values to the residual stream), and
counts the spikes per layer (and head.in's per channel, the head's input).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from stepvit.rtl.core_pipeline import (
    FIRE_FIELDS,
    check_plan,
    current_bits,
    event_layout,
    fields_of,
    lanes_of,
    lanes_word,
    select,
)
from stepvit.rtl.core_plan import CorePlan, Source
from stepvit.rtl.interface import SPIKE_COUNT_BITS
from stepvit.rtl.lif import LIFLanes


class FireStage(wiring.Component):
    """Charge, fire and reset one chunk of LIF lanes a cycle; write and count its spikes.

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry and pass layout.
    layers : int
        LIF layers counted (``spike_counts``), at least 1.
    head_in_layer : int
        The index of head.in among them: its spikes are also counted per channel.

    Members
    -------
    descriptor : In(plan.layout())
        The pass being run (its layer, target spike map, chunk offset, ``to_stream``).
    clear : In(1)
        Pulse: an image starts; every count goes back to zero.
    valid : In(1)
        A chunk arrives this cycle.
    event : In(FIRE_FIELDS of the event layout)
        Its chunk, group index, first step and addresses.
    current : In(ArrayLayout(signed(current_bits), lanes))
        Its input currents.
    theta, membrane, spike_value : In(lanes words)
        The thresholds, the membranes (zero at the pass's first step) and the stream
        values of a spike, as read for the chunk.
    membrane_write : In(WritePort.Signature)
        The membranes after the step.
    stream_write : In(WritePort.Signature)
        The spikes' stream values, in a pass with ``to_stream`` (the embedding).
    spike_write : Out(1)
        The chunk's spikes go to the pass's target spike map this cycle ...
    spike_address, spike_chunk, spikes : Out
        ... at this word, in these lanes of it (``chunk_offset + chunk``), these bits. With
        segments (``CoreGeometry.spike_word_bits``) the address is the segment's word
        (``segment * t_max * tokens`` added) and the lanes the chunk's within the segment:
        both kept by adding over a group's chunks, which fire in order.
    counts : Out(ArrayLayout(unsigned(32), layers))
        Spikes per LIF layer since ``clear`` (added a cycle after the chunk fires).
    head_counts : Out(ArrayLayout(unsigned(count_bits), dim_word_bits))
        head.in's spikes per channel since ``clear``: the head's input (registers, in a
        core without segments).
    count_address, count_data, count_write : Out, In, In(WritePort.Signature)
        In a core with segments (``CoreGeometry.counts_in_memory``) the counts are a
        memory, a segment's channels a word: the read of the firing chunk's segment (read
        transparently), and the write of its lanes a cycle later (read-modify-write).
    """

    def __init__(self, *, plan: CorePlan, layers: int, head_in_layer: int) -> None:
        self._plan = check_plan(plan)
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, not {layers!r}")
        if not isinstance(head_in_layer, int) or not 0 <= head_in_layer < layers:
            raise ValueError(f"head_in_layer must be a layer index below {layers}, "
                             f"not {head_in_layer!r}")
        self._head_in_layer = head_in_layer
        geometry = plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        fields = fields_of(event_layout(plan), FIRE_FIELDS)
        address_bits = {name: Shape.cast(fields[name].shape).width for name in FIRE_FIELDS}
        super().__init__({
            "descriptor": In(plan.layout()),
            "clear": In(1),
            "valid": In(1),
            "event": In(fields),
            "current": In(data.ArrayLayout(signed(current_bits(geometry)), lanes)),
            "theta": In(bits["membrane"] * lanes),
            "membrane": In(bits["membrane"] * lanes),
            "spike_value": In(bits["stream"] * lanes),
            "membrane_write": In(WritePort.Signature(
                addr_width=address_bits["group_index"],
                shape=unsigned(bits["membrane"] * lanes))),
            "stream_write": In(WritePort.Signature(
                addr_width=address_bits["stream_address"],
                shape=unsigned(bits["stream"] * lanes))),
            "spike_write": Out(1),
            "spike_address": Out(range(max(geometry.max_segments * geometry.t_max
                                           * geometry.tokens, 2))),
            "spike_chunk": Out(plan.layout()["chunk_offset"].shape.width
                               + address_bits["chunk"]),
            "spikes": Out(lanes),
            "counts": Out(data.ArrayLayout(unsigned(SPIKE_COUNT_BITS), layers)),
            **(self._count_members() if geometry.counts_in_memory else {
                "head_counts": Out(data.ArrayLayout(unsigned(geometry.count_bits),
                                                    geometry.dim_word_bits))}),
        })

    def _count_members(self) -> dict[str, object]:
        """Return the members of head.in's count memory (with segments)."""
        geometry = self._plan.geometry
        bits = geometry.count_bits
        width = geometry.word_bits(geometry.dim_word_bits) * bits
        address = range(max(geometry.dim_segments, 2))
        return {"count_address": Out(address),
                "count_data": In(width),
                "count_write": In(WritePort.Signature(
                    addr_width=Shape.cast(address).width, shape=unsigned(width),
                    granularity=geometry.lanes * bits))}

    def elaborate(self, platform: object) -> Module:
        """Build the LIF lanes, the writes of membranes and spikes, and the counts."""
        m = Module()
        geometry = self._plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        desc, fire = self.descriptor, self.event
        m.submodules.lif = lif = LIFLanes(
            lanes=lanes, membrane_bits=bits["membrane"], current_bits=current_bits(geometry),
            leak_shift=geometry.leak_shift, reset=geometry.reset)
        theta_values = lanes_of(self.theta, lanes, bits["membrane"], is_signed=True)
        membrane_values = lanes_of(self.membrane, lanes, bits["membrane"], is_signed=True)
        spike_values = lanes_of(self.spike_value, lanes, bits["stream"], is_signed=True)
        for lane in range(lanes):
            m.d.comb += [
                lif.membrane[lane].eq(Mux(fire.first_step, 0, membrane_values[lane])),
                lif.current[lane].eq(self.current[lane]),
                lif.threshold[lane].eq(theta_values[lane]),
            ]
        fired = Signal(lanes)
        m.d.comb += fired.eq(lif.spikes & self._channel_lanes(fire.chunk))
        place = self._spike_place(m)
        with m.If(self.valid):
            m.d.comb += [
                self.membrane_write.addr.eq(fire.group_index),
                self.membrane_write.data.eq(lanes_word(list(lif.next_membrane),
                                                       bits["membrane"])),
                self.membrane_write.en.eq(1),
                self.spike_write.eq(1),
                self.spike_address.eq(fire.word_address + place[0]),
                self.spike_chunk.eq(place[1]),
                self.spikes.eq(fired),
            ]
            with m.If(desc.to_stream):
                m.d.comb += [
                    self.stream_write.addr.eq(fire.stream_address),
                    self.stream_write.data.eq(lanes_word(
                        [Mux(fired[lane], spike_values[lane], 0) for lane in range(lanes)],
                        bits["stream"])),
                    self.stream_write.en.eq(1),
                ]
        self._count(m, fired, place)
        return m

    def _spike_place(self, m: Module) -> tuple[Value, Value, Value]:
        """Return (address offset, chunk within the word, segment) of the firing chunk.

        Without segments, the word itself and the chunk ``chunk_offset + chunk``. With
        them, a group's first chunk takes its segment and place from the pass
        (``out_segment_address``, ``out_within``), and each next chunk the place after the
        one before (a segment holds ``spike_word_bits // lanes`` chunks): no table indexed
        by the chunk, which would be a ROM. The segment itself counts from 0 at a group's
        first chunk: the segment of a pass whose first chunk is 0 (head.in's, whose counts
        it addresses).
        """
        geometry = self._plan.geometry
        desc, fire = self.descriptor, self.event
        if geometry.max_segments == 1:
            return Const(0, 1), desc.chunk_offset + fire.chunk, Const(0, 1)
        per_segment = geometry.spike_word_bits // geometry.lanes
        next_address = Signal.like(desc.out_segment_address, name="next_segment_address")
        next_within = Signal.like(desc.out_within, name="next_within")
        next_segment = Signal(range(max(geometry.max_segments, 2)), name="next_segment")
        first = fire.chunk == 0
        address = Mux(first, desc.out_segment_address, next_address)
        within = Mux(first, desc.out_within, next_within)
        segment = Mux(first, 0, next_segment)
        wraps = within + 1 == per_segment
        with m.If(self.valid):
            m.d.sync += [next_within.eq(Mux(wraps, 0, within + 1)),
                         next_address.eq(Mux(wraps, address + geometry.t_max * geometry.tokens,
                                             address)),
                         next_segment.eq(segment + wraps)]
        return address, within, segment

    def _count(self, m: Module, fired: Signal, place: tuple[Value, Value, Value]) -> None:
        """Add the fired lanes to their layer's count and, for head.in, to each channel's.

        ``place``: the firing chunk's (:meth:`_spike_place`), which addresses the count
        memory of a core with segments.
        """
        geometry = self._plan.geometry
        lanes, desc = geometry.lanes, self.descriptor
        counts = [Signal(SPIKE_COUNT_BITS, name=f"count{i}") for i in range(len(self.counts))]
        m.d.comb += [self.counts[i].eq(count) for i, count in enumerate(counts)]
        with m.If(self.clear):
            m.d.sync += [count.eq(0) for count in counts]
        # The spike count is added a cycle later: membrane read, LIF and a wide count adder
        # in one cycle were the design's longest path (rtl/timing.py). Nothing reads the
        # counts before the argmax, cycles after the last LIF chunk.
        fired_held = Signal(lanes)
        count_layer = Signal.like(desc.layer)
        count_chunk = Signal.like(self.event.chunk)
        count_valid = Signal()
        m.d.sync += [fired_held.eq(fired), count_layer.eq(desc.layer),
                     count_chunk.eq(self.event.chunk), count_valid.eq(self.valid)]
        with m.If(count_valid):
            layer_count = Array(counts)[count_layer]
            m.d.sync += layer_count.eq(layer_count + sum(fired_held[lane]
                                                          for lane in range(lanes)))
        # head.in also counts per channel: the head's input (its COUNTS pass)
        head_in = count_valid & (count_layer == self._head_in_layer)
        if geometry.counts_in_memory:
            self._count_in_memory(m, head_in, fired_held, place)
            return
        head_counts = [Signal(geometry.count_bits, name=f"head_count{c}")
                       for c in range(geometry.dim_word_bits)]
        m.d.comb += [self.head_counts[c].eq(count) for c, count in enumerate(head_counts)]
        with m.If(self.clear):
            m.d.sync += [count.eq(0) for count in head_counts]
        with m.If(head_in):
            for chunk in range(geometry.dim_chunks):
                with m.If(count_chunk == chunk):
                    for lane in range(lanes):
                        count = head_counts[chunk * lanes + lane]
                        m.d.sync += count.eq(count + fired_held[lane])

    def _count_in_memory(self, m: Module, head_in: Value, fired_held: Signal,
                         place: tuple[Value, Value, Value]) -> None:
        """Add head.in's fired lanes into the count memory (read-modify-write).

        The chunk's word is read as it fires and its lanes written a cycle later. No
        clear: the first token of the pass's first step writes its spikes over what the
        image before left (head.in's pass and the head's run at the same steps, so the
        counts are read only after one that wrote every chunk).
        """
        geometry = self._plan.geometry
        lanes, bits = geometry.lanes, geometry.count_bits
        desc, fire = self.descriptor, self.event
        _, within, segment = place
        held_within = Signal.like(within, name="count_within")
        held_segment = Signal.like(segment, name="count_segment")
        fresh = Signal(name="count_fresh")
        m.d.comb += self.count_address.eq(segment)
        m.d.sync += [held_within.eq(within), held_segment.eq(segment),
                     fresh.eq(fire.first_step & (fire.group_index < desc.chunks))]
        per_segment = len(self.count_data) // (lanes * bits)
        chunk_counts = select(m, [self.count_data[c * lanes * bits:(c + 1) * lanes * bits]
                                  for c in range(per_segment)], held_within)
        added = Cat(*((Mux(fresh, 0, chunk_counts[lane * bits:(lane + 1) * bits])
                       + fired_held[lane])[:bits] for lane in range(lanes)))
        with m.If(head_in):
            m.d.comb += [self.count_write.addr.eq(held_segment),
                         self.count_write.data.eq(Cat(*([added] * per_segment))),
                         self.count_write.en.eq(1 << held_within)]

    def _channel_lanes(self, chunk: Value) -> Value:
        """Return the lanes of ``chunk`` that are channels of the layer.

        A ragged last chunk has fewer: of the MLP's hidden layer when the pass writes it,
        else of ``dim``. ``chunk`` is the pass's: a slice of a layer (fc1's, or any with
        split passes) starts at its ``chunk_offset``.
        """
        geometry, lanes = self._plan.geometry, self._plan.geometry.lanes
        desc = self.descriptor

        def valid(width: int, chunks: int, index: Value) -> Value:
            last = width - (chunks - 1) * lanes  # lanes of the last chunk
            return Mux(index == chunks - 1, (1 << last) - 1, (1 << lanes) - 1)

        return Mux(desc.target == Source.HIDDEN,
                   valid(geometry.mlp_dim, geometry.mlp_chunks, desc.chunk_offset + chunk),
                   valid(geometry.dim, geometry.dim_chunks,
                         desc.chunk_offset + chunk if self._plan.split else chunk))
