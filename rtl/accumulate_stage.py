"""The core's accumulate stage: an event's weights (or KV values) added in the lanes.

The second stage of :class:`~stepvit.rtl.core.StepvitCore`'s pipeline. An event arrives
with the weight word and the KV rows its reads fetched; the stage adds, per lane, the
event's weight (shifted by its bit plane: the embedding's pixels, the head's counts) or,
in the Q·KV pass, the KV value of the lane's channel, in
:class:`~stepvit.rtl.accumulator.AccumulatorLanes`; in the KV pass it instead adds the
token's V segment into each walker's KV row (read-modify-write). An event that closes a
chunk hands the chunk's sums on to the sum stage, whose reads it issues.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from stepvit.rtl.accumulator import AccumulatorLanes
from stepvit.rtl.core_pipeline import (
    SUM_FIELDS,
    check_plan,
    event_layout,
    fields_of,
    lanes_of,
    select,
)
from stepvit.rtl.core_plan import CorePlan, Sink, WeightSource


class AccumulateStage(wiring.Component):
    """Add one event a cycle into ``lanes`` sums, or into the KV rows; close chunks.

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry and pass layout.

    Members
    -------
    descriptor : In(plan.layout())
        The pass being run (its weights, bit or count planes, sink).
    event : In(event_layout(plan))
        The event of this cycle (``valid`` low: none).
    weights, bias : In(8 * lanes), In(bias_bits * lanes)
        The event's weight word and its chunk's biases, as read (the walk stage addresses
        both): a chunk's sum starts from its biases (in a pass with ``use_bias``), so the
        sum stage adds only the operand.
    kv_rows : In(ArrayLayout(unsigned(attention_bits * head_dim), parallel_heads))
        Each walker's KV row, as read (zero where the event says it is fresh).
    kv_write : In(WritePort.Signature).array(parallel_heads)
        The KV pass's adds, one KV memory per walker.
    current_address, stream_address : Out
        The sum stage's reads, for the chunk the event may close.
    valid : Out(1)
        A chunk closed in the cycle before (registered) ...
    closed : Out(SUM_FIELDS of the event layout)
        ... with these fields of its last event ...
    sums : Out(ArrayLayout(signed(sum_bits), lanes))
        ... and these sums.
    """

    def __init__(self, *, plan: CorePlan) -> None:
        self._plan = check_plan(plan)
        geometry = plan.geometry
        layout = event_layout(plan)
        self._lanes_unit = AccumulatorLanes(
            lanes=geometry.lanes, addend_bits=geometry.addend_bits, sum_bits=geometry.sum_bits,
            start_bits=geometry.bias_bits)
        row_bits = geometry.bits["attention"] * geometry.head_dim
        kv_address = Shape.cast(layout["kv_address"].shape.elem_shape).width
        super().__init__({
            "descriptor": In(plan.layout()),
            "event": In(layout),
            "weights": In(8 * geometry.lanes),
            "bias": In(geometry.bias_bits * geometry.lanes),
            "kv_rows": In(data.ArrayLayout(unsigned(row_bits), geometry.parallel_heads)),
            "kv_write": In(WritePort.Signature(addr_width=kv_address, shape=unsigned(row_bits))
                           ).array(geometry.parallel_heads),
            "current_address": Out(layout["group_index"].shape),
            "stream_address": Out(layout["stream_address"].shape),
            "valid": Out(1),
            "closed": Out(fields_of(layout, SUM_FIELDS)),
            "sums": Out(self._lanes_unit.total.shape()),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the lanes' addends, the KV adds and the register to the sum stage."""
        m = Module()
        geometry = self._plan.geometry
        lanes = geometry.lanes
        desc, acc = self.descriptor, self.event
        m.submodules.lanes = lanes_unit = self._lanes_unit
        head_dim, slots = geometry.head_dim, geometry.parallel_heads
        weight_values = lanes_of(self.weights, lanes, 8, is_signed=True)
        # Each walker's KV row as read: zero until its first add in the block's KV pass.
        kv_rows = [lanes_of(Mux(acc.kv_fresh[slot], 0, self.kv_rows[slot]), head_dim,
                            geometry.bits["attention"], is_signed=False)
                   for slot in range(slots)]
        kv_values = self._kv_lanes(m, kv_rows)
        plane = Mux(desc.bit_planes | desc.count_planes, acc.plane, 0)
        m.d.comb += [lanes_unit.valid.eq(acc.valid), lanes_unit.first.eq(acc.first)]
        # a chunk's sum starts from its biases: no third input of the sum stage's adders
        bias_values = lanes_of(self.bias, lanes, geometry.bias_bits, is_signed=True)
        m.d.comb += [lanes_unit.start[lane].eq(Mux(desc.use_bias, bias_values[lane], 0))
                     for lane in range(lanes)]
        is_kv = desc.weights == WeightSource.KV
        for lane in range(lanes):
            addend = Mux(is_kv, kv_values[lane], weight_values[lane] << plane)
            # In the Q·KV pass a head's lanes add only when its own walker has a bit.
            slot = lane // head_dim if lane < slots * head_dim else 0
            enable = Mux(is_kv, acc.has_weight[slot], acc.has_weight[0])
            m.d.comb += lanes_unit.addend[lane].eq(Mux(enable, addend, 0))
        for slot in range(slots):
            self._add_value_to_kv(m, kv_rows[slot], slot)

        closing = acc.valid & acc.last
        m.d.sync += self.valid.eq(closing)
        with m.If(closing):
            m.d.sync += [self.closed[name].eq(acc[name]) for name in SUM_FIELDS]
            m.d.sync += self.sums.eq(lanes_unit.total)
        m.d.comb += [
            self.current_address.eq(acc.group_index),
            self.stream_address.eq(acc.stream_address),
        ]
        return m

    def _kv_lanes(self, m: Module, rows: list[list[Value]]) -> list[Value]:
        """Return per lane what a Q bit adds in the Q·KV pass.

        That is its KV row's value for the lane's channel when the channel is in the bit's
        head, else 0. With parallel heads, the chunk's lanes are its heads' in order: lane
        ``j * head_dim + i`` gets element ``i`` of walker ``j``'s row (``rows[j]``).
        """
        geometry = self._plan.geometry
        lanes, head_dim, bits = geometry.lanes, geometry.head_dim, geometry.bits["attention"]
        slots, acc = geometry.parallel_heads, self.event
        if slots > 1:
            return [rows[lane // head_dim][lane % head_dim] if lane < slots * head_dim
                    else Const(0, bits) for lane in range(lanes)]
        row = rows[0]
        values = []
        for lane in range(lanes):
            options = []
            for chunk in range(geometry.dim_chunks):
                channel = chunk * lanes + lane
                options.append(Mux(acc.head == channel // head_dim, row[channel % head_dim], 0)
                               if channel < geometry.dim else Const(0, bits))
            values.append(select(m, options, acc.chunk) if len(options) > 1 else options[0])
        return values

    def _add_value_to_kv(self, m: Module, row: list[Value], slot: int) -> None:
        """In the KV pass, add walker ``slot``'s V segment into its KV row (read-modify-write)."""
        attention_bits = self._plan.geometry.bits["attention"]
        acc, kv_write = self.event, self.kv_write[slot]
        with m.If(acc.valid & acc.has_weight[slot] & (self.descriptor.sink == Sink.KV_ADD)):
            m.d.comb += [
                kv_write.addr.eq(acc.kv_address[slot]),
                kv_write.data.eq(Cat(*(
                    (value + acc.value_segment[slot][j])[:attention_bits]
                    for j, value in enumerate(row)))),
                kv_write.en.eq(1),
            ]
