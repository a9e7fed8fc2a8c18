"""The core's sum stage: a finished chunk gets its operand, then goes to its sink.

The third stage of :class:`~stepvit.rtl.core.StepvitCore`'s pipeline. A chunk's sums arrive
(its biases in them already: the accumulate stage starts a sum from them) with the
embedding current and residual stream its reads fetched; per lane the stage adds the
operand of the pass (the embedding current, or the stream of the step; its multiplexer
holds only the operands the plan's passes take), then stores the
total (the embedding current, the residual stream), adds it into the logits (which it
holds), or registers it for the fire stage, whose reads it issues.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from stepvit.rtl.core_pipeline import (
    FIRE_FIELDS,
    SUM_FIELDS,
    check_plan,
    current_bits,
    event_layout,
    fields_of,
    lanes_of,
    lanes_word,
)
from stepvit.rtl.core_plan import CorePlan, Operand, Sink


class SumStage(wiring.Component):
    """Give a finished chunk its operand; store it, add it to the logits, or fire it.

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry, pass layout and the head's biases.
    head_bias_input : bool
        Take the head's biases from the ``head_bias`` input (a register the weight loader
        fills, ``weights="ddr"``) instead of the plan's constants.

    Members
    -------
    descriptor : In(plan.layout())
        The pass being run (its operand, sink).
    preset : In(1)
        Pulse: an image starts; the logits go back to the head's biases.
    valid : In(1)
        A chunk arrives this cycle.
    event : In(SUM_FIELDS of the event layout)
        Its chunk, group index, first step, stream-zero flag and addresses.
    sums : In(ArrayLayout(signed(sum_bits), lanes))
        Its sums.
    current, stream : In(lanes words)
        The embedding current and the residual stream, as read for the chunk.
    current_write, stream_write : In(WritePort.Signature)
        A chunk stored to the embedding current, or to the residual stream.
    head_bias : In(ArrayLayout(signed(logit_bits), num_classes))
        With ``head_bias_input`` only: the head's biases.
    logits : Out(ArrayLayout(signed(logit_bits), class_chunks * lanes))
        The head's biases plus every chunk of the LOGITS sink since ``preset``.
    membrane_address, theta_address, spike_value_address : Out
        The fire stage's reads, for the chunk arriving now.
    fire_valid : Out(1)
        A LIF chunk goes to the fire stage (registered) ...
    fire_event : Out(FIRE_FIELDS of the event layout)
        ... with these fields ...
    fire_current : Out(ArrayLayout(signed(current_bits), lanes))
        ... and these input currents.
    """

    def __init__(self, *, plan: CorePlan, head_bias_input: bool = False) -> None:
        self._plan = check_plan(plan)
        self._head_bias_input = head_bias_input
        geometry = plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        fields = fields_of(event_layout(plan), SUM_FIELDS)

        def address(name: str) -> int:
            return Shape.cast(fields[name].shape).width

        super().__init__({
            "descriptor": In(plan.layout()),
            "preset": In(1),
            "valid": In(1),
            "event": In(fields),
            "sums": In(data.ArrayLayout(signed(geometry.sum_bits), lanes)),
            "current": In(bits["embed_current"] * lanes),
            "stream": In(bits["stream"] * lanes),
            "current_write": In(WritePort.Signature(
                addr_width=address("group_index"),
                shape=unsigned(bits["embed_current"] * lanes))),
            "stream_write": In(WritePort.Signature(
                addr_width=address("stream_address"), shape=unsigned(bits["stream"] * lanes))),
            "logits": Out(data.ArrayLayout(signed(bits["logit"]),
                                           geometry.class_chunks * lanes)),
            "membrane_address": Out(fields["group_index"].shape),
            "theta_address": Out(fields["theta_address"].shape),
            "spike_value_address": Out(fields["chunk"].shape),
            "fire_valid": Out(1),
            "fire_event": Out(fields_of(event_layout(plan), FIRE_FIELDS)),
            "fire_current": Out(data.ArrayLayout(signed(current_bits(geometry)), lanes)),
            **({"head_bias": In(data.ArrayLayout(signed(bits["logit"]), geometry.num_classes))}
               if head_bias_input else {}),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the totals, the stores, the logits and the register to the fire stage."""
        m = Module()
        geometry = self._plan.geometry
        lanes = geometry.lanes
        totals = self._totals(m)
        # A LIF chunk goes on to the fire stage (its own cycle: the sum and the LIF each
        # chain several adders); the other sinks write here.
        fire_current = [Signal(signed(current_bits(geometry)), name=f"fire_current{lane}")
                        for lane in range(lanes)]
        m.d.sync += self.fire_valid.eq(self.valid & (self.descriptor.sink == Sink.LIF))
        m.d.sync += [self.fire_event[name].eq(self.event[name]) for name in FIRE_FIELDS]
        m.d.sync += [held.eq(total) for held, total in zip(fire_current, totals)]
        m.d.comb += [self.fire_current[lane].eq(held) for lane, held in enumerate(fire_current)]
        m.d.comb += [
            self.membrane_address.eq(self.event.group_index),
            self.theta_address.eq(self.event.theta_address),
            self.spike_value_address.eq(self.event.chunk),
        ]
        self._store(m, totals)
        return m

    def _totals(self, m: Module) -> list[Signal]:
        """Return per lane the sum (biases included) plus its operand (current or stream)."""
        geometry = self._plan.geometry
        lanes, bits, width = geometry.lanes, geometry.bits, current_bits(geometry)
        desc = self.descriptor
        current_values = lanes_of(self.current, lanes, bits["embed_current"], is_signed=True)
        stream_values = lanes_of(self.stream, lanes, bits["stream"], is_signed=True)
        # only the operands some pass takes: a stem design's passes never add the embedding
        # current (it has no embedding), so its lanes select the stream or nothing
        used = {p.get("operand", Operand.NONE) for p in self._plan.passes}
        totals = []
        for lane in range(lanes):
            operand = Signal(signed(width), name=f"operand{lane}")
            with m.Switch(desc.operand):
                if Operand.CURRENT in used:
                    with m.Case(Operand.CURRENT):
                        m.d.comb += operand.eq(current_values[lane])
                if Operand.STREAM in used:
                    with m.Case(Operand.STREAM):
                        m.d.comb += operand.eq(Mux(self.event.stream_zero, 0,
                                                   stream_values[lane]))
            total = Signal(signed(width), name=f"total{lane}")
            m.d.comb += total.eq(self.sums[lane] + operand)
            totals.append(total)
        return totals

    def _store(self, m: Module, totals: list[Signal]) -> None:
        """Write a finished chunk to its sink: embedding current, stream, logits."""
        geometry = self._plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        sink = self.event
        logits = [Signal(signed(bits["logit"]), name=f"logit{k}")
                  for k in range(geometry.class_chunks * lanes)]
        m.d.comb += [self.logits[k].eq(logit) for k, logit in enumerate(logits)]
        with m.If(self.preset):
            head_bias = (self.head_bias if self._head_bias_input else self._plan.head_bias)
            m.d.sync += [logit.eq(head_bias[k] if k < geometry.num_classes else 0)
                         for k, logit in enumerate(logits)]
        with m.If(self.valid):
            with m.Switch(self.descriptor.sink):
                with m.Case(Sink.STORE_CURRENT):
                    m.d.comb += [
                        self.current_write.addr.eq(sink.group_index),
                        self.current_write.data.eq(lanes_word(totals, bits["embed_current"])),
                        self.current_write.en.eq(1),
                    ]
                with m.Case(Sink.STORE_STREAM):
                    m.d.comb += [
                        self.stream_write.addr.eq(sink.stream_address),
                        self.stream_write.data.eq(lanes_word(totals, bits["stream"])),
                        self.stream_write.en.eq(1),
                    ]
                with m.Case(Sink.LOGITS):
                    # a slice of the head's chunks (split passes) starts at its chunk_offset
                    chunk = (self.descriptor.chunk_offset + sink.chunk if self._plan.split
                             else sink.chunk)
                    for k, logit in enumerate(logits):
                        with m.If(chunk == k // lanes):
                            m.d.sync += logit.eq(logit + self.sums[k % lanes])
