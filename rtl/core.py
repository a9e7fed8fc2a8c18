"""The compute core: the whole network of SPEC.md section 3 on ``lanes`` accumulator lanes.

A four-stage pipeline, fed one event per cycle and never stalled (each stage's memory
reads are issued by the stage before it):

- **walk** (the sequencer): steps through the passes of :class:`~stepvit.rtl.core_plan.CorePlan`
  and, for each group and chunk, walks the set bits of the input spike word with a
  :class:`~stepvit.rtl.spike_walker.SpikeWalker`; each set bit is one event that addresses
  a weight word (or a KV row). A chunk with no input spike is one event that only closes
  the chunk (its LIF still charges with the bias and leaks). Masked steps are skipped
  before they cost a cycle. The next spike word is prefetched, so chunks follow each other
  without a bubble.
- **accumulate**: the event's weights (``lanes`` of them, shifted by the bit plane in the
  embedding) are added by :class:`~stepvit.rtl.accumulator.AccumulatorLanes`; the KV pass
  instead adds the token's V segment into a KV row here (read-modify-write).
- **sum**: a finished chunk gets its bias and operand (embedding current or residual
  stream) and is stored (embedding current, residual stream) or added into the logits,
  or goes on to
- **fire**: :class:`~stepvit.rtl.lif.LIFLanes` (spikes into a spike map, membranes back).

Every pass drains the pipeline before the next begins (the next reads what it wrote).
No multiplier: addresses advance by adding strides, words are picked by multiplexers
(a dynamic ``word_select`` would be a ``$mul``), and products of a pixel and a weight are
shifts of the weight over the pixel's bit planes.

The memories are in :mod:`~stepvit.rtl.core_memories`.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring

from stepvit.host.export import Export
from stepvit.rtl.accumulator import AccumulatorLanes
from stepvit.rtl.core_memories import add_core_memories
from stepvit.rtl.core_plan import (
    CorePlan,
    Operand,
    Sink,
    Source,
    WeightSource,
)
from stepvit.rtl.interface import core_signature
from stepvit.rtl.lif import LIFLanes
from stepvit.rtl.patch_loader import PatchLoader
from stepvit.rtl.spike_walker import SpikeWalker

#: Cycles after the last event of a pass until everything is written (the accumulate, sum
#: and fire stages); the next pass's descriptor is loaded in the cycle after.
DRAIN_CYCLES = 3


def _select(m: Module, words: list[Value], index: Value) -> Signal:
    """Return ``words[index]`` as a multiplexer (a dynamic ``word_select`` is a ``$mul``)."""
    selected = Signal(max(len(word) for word in words))
    with m.Switch(index):
        for position, word in enumerate(words):
            with m.Case(position):
                m.d.comb += selected.eq(word)
    return selected


def _lanes_of(word: Value, lanes: int, bits: int, *, is_signed: bool) -> list[Value]:
    """Return the ``lanes`` fields of ``bits`` bits of a packed word, lane 0 lowest."""
    fields = [word[lane * bits:(lane + 1) * bits] for lane in range(lanes)]
    return [field.as_signed() for field in fields] if is_signed else fields


class StepvitCore(wiring.Component):
    """The network of ``export`` on ``lanes`` parallel accumulator lanes.

    Parameters
    ----------
    export : Export
        The validated export: shapes, widths, weights (memory contents) and thresholds.
    lanes : int
        Output channels computed in parallel; must divide the head width and the MLP width.

    Members
    -------
    See :func:`stepvit.rtl.interface.core_signature`.
    """

    def __init__(self, export: Export, *, lanes: int) -> None:
        self.plan = CorePlan(export, lanes=lanes)
        super().__init__(core_signature(export))

    def elaborate(self, platform: object) -> Module:
        """Build the memories, the sequencer and the pipeline stages after it."""
        m = Module()
        plan = self.plan
        g = plan.geometry
        lanes, T, N, D = g.lanes, g.t_max, g.tokens, g.dim
        bits = g.bits
        layout = plan.layout()

        memories = add_core_memories(m, plan)
        weight_read, bias_read = memories.weight_read, memories.bias_read
        theta_read, spike_value_read = memories.theta_read, memories.spike_value_read
        patch_write, patch_read = memories.patch_write, memories.patch_read
        buffer_write, buffer_read = memories.buffer_write, memories.buffer_read
        buffer_widths = memories.buffer_widths
        current_write, current_read = memories.current_write, memories.current_read
        membrane_write, membrane_read = memories.membrane_write, memories.membrane_read
        stream_write, stream_read = memories.stream_write, memories.stream_read
        kv_write, kv_read = memories.kv_write, memories.kv_read

        # --- run state -------------------------------------------------------------------
        masks = Signal.like(self.masks)
        stream_zero = Signal(T)  # stream of step t is all zero (embedding masked at t)
        logits = [Signal(signed(bits["logit"]), name=f"logit{k}")
                  for k in range(g.class_chunks * lanes)]
        counts = [Signal(32, name=f"count{i}") for i in range(len(self.spike_counts))]
        for k in range(g.num_classes):
            m.d.comb += self.logits[k].eq(logits[k])
        for i, count in enumerate(counts):
            m.d.comb += self.spike_counts[i].eq(count)

        pass_rom = Array(Const(layout.const(p).as_value().value, layout.size)
                         for p in plan.passes)
        pass_index = Signal(range(len(plan.passes) + 1))
        desc = Signal(layout)
        step_mask = Signal(T)
        module_mask = _select(m, [masks[i] for i in range(len(masks))], desc.module)
        m.d.comb += step_mask.eq(Mux(desc.once, 1, module_mask))

        def constants(values: list[int]) -> Array:
            return Array(Const(v, max(max(values), 1).bit_length()) for v in values)

        word_base = constants([t * N for t in range(T)])
        stream_base = constants([t * N * g.dim_chunks for t in range(T)])
        kv_base = constants([t * D for t in range(T)])
        segment_mask = constants([((1 << g.head_dim) - 1) << (h * g.head_dim)
                                  for h in range(g.heads)])

        def next_step(after: Signal | None) -> tuple[Signal, Signal]:
            """Return (found, step): the first active step of the pass after ``after``."""
            found, step = Signal(), Signal(range(max(T, 2)))
            for candidate in reversed(range(T)):
                later = Const(1) if after is None else (after < candidate)
                with m.If(step_mask[candidate] & later):
                    m.d.comb += [found.eq(1), step.eq(candidate)]
            return found, step

        # --- walk stage: sequencer and spike walker ---------------------------------------
        m.submodules.walker = walker = SpikeWalker(width=g.walk_bits)
        step = Signal(range(max(T, 2)))
        group = Signal(range(max(N, D, 2)))
        chunk = Signal(range(max(g.dim_chunks, g.mlp_chunks, g.class_chunks, g.heads, 2)))
        segment = Signal(range(max(g.heads, 2)))
        segment_chunk = Signal.like(chunk)
        group_index = Signal(range(max(N * max(g.dim_chunks, g.class_chunks), D, 2)))
        weight_row = Signal(range(max(len(plan.weight_words), 2)))
        first_event = Signal()
        first_step = Signal()
        held_word = Signal(g.walk_bits)
        value_word = Signal(D)
        fetch_step = Signal.like(step)
        fetch_group = Signal.like(group)
        fetch_valid = Signal()

        first_found, first_active = next_step(None)
        following_found, following_step = next_step(fetch_step)
        more_groups = fetch_group + 1 < desc.groups
        successor_valid = Mux(more_groups, 1, following_found)
        successor_step = Mux(more_groups, fetch_step, following_step)
        successor_group = Mux(more_groups, fetch_group + 1, 0)

        fetch_address = Signal(range(max(T * N, 2)))
        fetch_enable = Signal()
        for port in (*buffer_read.values(), patch_read):
            m.d.comb += [port.addr.eq(fetch_address), port.en.eq(fetch_enable)]
        source_data = Signal(g.walk_bits)
        with m.Switch(desc.source):
            with m.Case(Source.PATCH):
                m.d.comb += source_data.eq(patch_read.data)
            for source, port in buffer_read.items():
                with m.Case(source):
                    m.d.comb += source_data.eq(port.data)
        value_data = Signal(D)
        with m.Switch(desc.value_source):
            for source, port in buffer_read.items():
                if source != Source.HIDDEN:
                    with m.Case(source):
                        m.d.comb += value_data.eq(port.data)

        def segment_of(head: object) -> object:
            return Mux(desc.segment_chunks != 0, segment_mask[head], (1 << g.walk_bits) - 1)

        # Event fields handed to the accumulate stage.
        event = {
            "valid": Signal(), "first": Signal(), "last": Signal(), "has_weight": Signal(),
            "plane": Signal(3), "chunk": Signal.like(chunk),
            "segment_chunk": Signal.like(chunk), "group_index": Signal.like(group_index),
            "first_step": Signal(), "stream_zero": Signal(),
            "word_address": Signal(range(max(T * N, 2))),
            "stream_address": Signal(range(max(T * N * g.dim_chunks, 2))),
            "kv_address": Signal(range(max(T * D, 2))),
            "bias_address": Signal(range(max(len(plan.bias_words), 2))),
            "theta_address": Signal(range(max(len(plan.theta_words), 2))),
            "value_segment": Signal(g.head_dim),
        }
        accumulate = {name: Signal.like(sig, name=f"acc_{name}") for name, sig in event.items()}

        group_end = walker.last | ~walker.any
        emit = Signal()
        running = Signal()
        m.d.comb += [
            emit.eq(running & (walker.any | ~desc.skip_empty)),
            event["valid"].eq(emit),
            event["first"].eq(first_event),
            event["last"].eq(group_end),
            event["has_weight"].eq(walker.any),
            event["plane"].eq(walker.index[:3]),
            event["chunk"].eq(chunk),
            event["segment_chunk"].eq(segment_chunk),
            event["group_index"].eq(group_index),
            event["first_step"].eq(first_step),
            event["stream_zero"].eq(stream_zero.bit_select(step, 1)),
            event["word_address"].eq(word_base[step] + group),
            event["stream_address"].eq(stream_base[step] + group_index),
            event["kv_address"].eq(kv_base[step] + Mux(desc.sink == Sink.KV_CLEAR, group,
                                                        walker.index)),
            event["bias_address"].eq(desc.bias_base + Mux(desc.bias_per_token, group_index,
                                                          chunk)),
            event["theta_address"].eq(desc.theta_base + chunk),
            event["value_segment"].eq(_select(m, [
                value_word[h * g.head_dim:(h + 1) * g.head_dim] for h in range(g.heads)],
                segment)),
            weight_read.addr.eq(weight_row + Mux(desc.bit_planes, walker.index >> 3,
                                                 walker.index)),
            kv_read.addr.eq(event["kv_address"]),
        ]
        for name, sig in event.items():
            m.d.sync += accumulate[name].eq(sig)

        def load_word(first_of_pass: bool) -> None:
            """Take the prefetched word as the current one and prefetch its successor."""
            m.d.comb += [
                walker.load.eq(1),
                walker.word.eq(source_data & segment_of(0)),
                fetch_enable.eq(1),
                fetch_address.eq(word_base[successor_step] + successor_group),
            ]
            new_step = fetch_step != step
            m.d.sync += [
                held_word.eq(source_data), value_word.eq(value_data),
                step.eq(fetch_step), group.eq(fetch_group),
                fetch_step.eq(successor_step), fetch_group.eq(successor_group),
                fetch_valid.eq(successor_valid),
                chunk.eq(0), segment.eq(0), segment_chunk.eq(0),
                weight_row.eq(desc.weight_base), first_event.eq(1),
            ]
            if first_of_pass:
                m.d.sync += [group_index.eq(0), first_step.eq(1)]
            else:
                m.d.sync += group_index.eq(Mux(new_step, 0, group_index + 1))
                with m.If(new_step):
                    m.d.sync += first_step.eq(0)
                    with m.If(desc.sink == Sink.STORE_STREAM):
                        m.d.sync += stream_zero.bit_select(step, 1).eq(0)

        # --- pixel loader: image words -> patch bit planes -------------------------------
        m.submodules.loader = loader = PatchLoader(image_shape=g.image_shape, patch=g.patch)
        m.d.comb += [
            self.img_addr.eq(loader.img_addr), loader.img_data.eq(self.img_data),
            patch_write.addr.eq(loader.patch_addr), patch_write.data.eq(loader.patch_data),
            patch_write.en.eq(loader.patch_enable),
        ]

        # --- control FSM ------------------------------------------------------------------
        drain = Signal(range(DRAIN_CYCLES + 1))
        best = Signal(range(max(g.num_classes, 2)))
        scan = Signal(range(g.num_classes + 1))
        logit_array = Array(logits)
        m.d.sync += self.done.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        masks.eq(self.masks), self.busy.eq(1),
                        stream_zero.eq(~self.masks[0]),
                    ]
                    m.d.comb += loader.start.eq(1)
                    m.d.sync += [count.eq(0) for count in counts]
                    m.d.sync += [logit.eq(plan.head_bias[k] if k < g.num_classes else 0)
                                 for k, logit in enumerate(logits)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                with m.If(loader.done):
                    m.d.sync += pass_index.eq(0)
                    m.next = "NEXT"
            with m.State("PREFETCH"):
                with m.If(first_found):
                    m.d.comb += [fetch_enable.eq(1), fetch_address.eq(word_base[first_active])]
                    m.d.sync += [fetch_step.eq(first_active), fetch_group.eq(0)]
                    m.next = "PRIME"
                with m.Else():
                    m.d.sync += pass_index.eq(pass_index + 1)
                    m.next = "NEXT"
            with m.State("PRIME"):
                load_word(first_of_pass=True)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), walker.step.eq(1)]
                with m.If(group_end):
                    with m.If(chunk + 1 < desc.chunks):
                        last_of_segment = segment_chunk + 1 == desc.segment_chunks
                        next_segment = Mux(last_of_segment, segment + 1, segment)
                        m.d.comb += [walker.load.eq(1),
                                     walker.word.eq(held_word & segment_of(next_segment))]
                        m.d.sync += [
                            chunk.eq(chunk + 1), segment.eq(next_segment),
                            segment_chunk.eq(Mux(last_of_segment, 0, segment_chunk + 1)),
                            weight_row.eq(weight_row + desc.input_len),
                            group_index.eq(group_index + 1), first_event.eq(1),
                        ]
                    with m.Elif(fetch_valid):
                        load_word(first_of_pass=False)
                    with m.Else():
                        with m.If(desc.sink == Sink.STORE_STREAM):
                            m.d.sync += stream_zero.bit_select(step, 1).eq(0)
                        m.d.sync += [drain.eq(0), pass_index.eq(pass_index + 1)]
                        m.next = "DRAIN"
                with m.Elif(emit):
                    m.d.sync += first_event.eq(0)
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == DRAIN_CYCLES - 1):
                    m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(pass_index == len(plan.passes)):
                    m.d.sync += [best.eq(0), scan.eq(1)]
                    m.next = "ARGMAX"
                with m.Else():
                    m.d.sync += desc.eq(pass_rom[pass_index])
                    m.next = "PREFETCH"
            with m.State("ARGMAX"):
                # The first maximum wins: only a strictly larger logit moves the choice.
                with m.If(scan == g.num_classes):
                    m.d.sync += [self.predicted.eq(best), self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    with m.If(logit_array[scan] > logit_array[best]):
                        m.d.sync += best.eq(scan)
                    m.d.sync += scan.eq(scan + 1)

        # --- accumulate stage ------------------------------------------------------------
        acc = accumulate
        m.submodules.lanes = lanes_unit = AccumulatorLanes(
            lanes=lanes, addend_bits=g.addend_bits, sum_bits=g.sum_bits)
        weight_values = _lanes_of(weight_read.data, lanes, 8, is_signed=True)
        chunk_bits = lanes * bits["attention"]
        kv_chunk = _select(m, [kv_read.data[i * chunk_bits:(i + 1) * chunk_bits]
                               for i in range(g.head_dim // lanes)], acc["segment_chunk"])
        kv_values = _lanes_of(kv_chunk, lanes, bits["attention"], is_signed=False)
        plane = Mux(desc.bit_planes, acc["plane"], 0)
        m.d.comb += [lanes_unit.valid.eq(acc["valid"]), lanes_unit.first.eq(acc["first"])]
        for lane in range(lanes):
            addend = Mux(desc.weights == WeightSource.KV, kv_values[lane],
                         weight_values[lane] << plane)
            m.d.comb += lanes_unit.addend[lane].eq(Mux(acc["has_weight"], addend, 0))
        with m.If(acc["valid"] & acc["has_weight"] & (desc.sink == Sink.KV_ADD)):
            row = _lanes_of(kv_read.data, g.head_dim, bits["attention"], is_signed=False)
            m.d.comb += [
                kv_write.addr.eq(acc["kv_address"]),
                kv_write.data.eq(Cat(*(
                    (value + acc["value_segment"][j])[:bits["attention"]]
                    for j, value in enumerate(row)))),
                kv_write.en.eq(1),
            ]

        sink = {name: Signal.like(acc[name], name=f"sink_{name}")
                for name in ("chunk", "group_index", "first_step", "stream_zero",
                             "word_address", "stream_address", "kv_address", "theta_address")}
        sink_valid = Signal()
        sink_sum = Signal(lanes_unit.total.shape())
        closing = acc["valid"] & acc["last"]
        m.d.sync += sink_valid.eq(closing)
        with m.If(closing):
            m.d.sync += [sink[name].eq(acc[name]) for name in sink]
            m.d.sync += sink_sum.eq(lanes_unit.total)
        m.d.comb += [
            current_read.addr.eq(acc["group_index"]),
            stream_read.addr.eq(acc["stream_address"]),
            bias_read.addr.eq(acc["bias_address"]),
        ]

        # --- sum stage: the finished sum gets its bias and operand -----------------------
        current_bits = max(g.sum_bits, g.bias_bits, bits["stream"],
                           bits["embed_current"]) + 2
        bias_values = _lanes_of(bias_read.data, lanes, g.bias_bits, is_signed=True)
        current_values = _lanes_of(current_read.data, lanes, bits["embed_current"], is_signed=True)
        stream_values = _lanes_of(stream_read.data, lanes, bits["stream"], is_signed=True)
        totals = []
        for lane in range(lanes):
            operand = Signal(signed(current_bits), name=f"operand{lane}")
            with m.Switch(desc.operand):
                with m.Case(Operand.CURRENT):
                    m.d.comb += operand.eq(current_values[lane])
                with m.Case(Operand.STREAM):
                    m.d.comb += operand.eq(Mux(sink["stream_zero"], 0, stream_values[lane]))
            total = Signal(signed(current_bits), name=f"total{lane}")
            m.d.comb += total.eq(sink_sum[lane] + operand
                                 + Mux(desc.use_bias, bias_values[lane], 0))
            totals.append(total)

        def lanes_word(values: list, width: int) -> object:
            return Cat(*(value.as_unsigned()[:width] for value in values))

        # A LIF chunk goes on to the fire stage (its own cycle: the sum and the LIF each
        # chain several adders); the other sinks write here.
        fire = {name: Signal.like(sink[name], name=f"fire_{name}")
                for name in ("chunk", "group_index", "first_step", "word_address",
                             "stream_address")}
        fire_valid = Signal()
        fire_current = [Signal(signed(current_bits), name=f"fire_current{lane}")
                        for lane in range(lanes)]
        m.d.sync += fire_valid.eq(sink_valid & (desc.sink == Sink.LIF))
        m.d.sync += [fire[name].eq(sink[name]) for name in fire]
        m.d.sync += [held.eq(total) for held, total in zip(fire_current, totals)]
        m.d.comb += [
            membrane_read.addr.eq(sink["group_index"]),
            theta_read.addr.eq(sink["theta_address"]),
            spike_value_read.addr.eq(sink["chunk"]),
        ]
        with m.If(sink_valid):
            with m.Switch(desc.sink):
                with m.Case(Sink.STORE_CURRENT):
                    m.d.comb += [
                        current_write.addr.eq(sink["group_index"]),
                        current_write.data.eq(lanes_word(totals, bits["embed_current"])),
                        current_write.en.eq(1),
                    ]
                with m.Case(Sink.STORE_STREAM):
                    m.d.comb += [
                        stream_write.addr.eq(sink["stream_address"]),
                        stream_write.data.eq(lanes_word(totals, bits["stream"])),
                        stream_write.en.eq(1),
                    ]
                with m.Case(Sink.KV_CLEAR):
                    m.d.comb += [kv_write.addr.eq(sink["kv_address"]), kv_write.data.eq(0),
                                 kv_write.en.eq(1)]
                with m.Case(Sink.LOGITS):
                    for k, logit in enumerate(logits):
                        with m.If(sink["chunk"] == k // lanes):
                            m.d.sync += logit.eq(logit + sink_sum[k % lanes])

        # --- fire stage: charge, fire, reset ------------------------------------------------
        m.submodules.lif = lif = LIFLanes(
            lanes=lanes, membrane_bits=bits["membrane"], current_bits=current_bits,
            leak_shift=g.leak_shift, reset=g.reset)
        theta_values = _lanes_of(theta_read.data, lanes, bits["membrane"], is_signed=True)
        membrane_values = _lanes_of(membrane_read.data, lanes, bits["membrane"], is_signed=True)
        spike_values = _lanes_of(spike_value_read.data, lanes, bits["stream"], is_signed=True)
        for lane in range(lanes):
            m.d.comb += [
                lif.membrane[lane].eq(Mux(fire["first_step"], 0, membrane_values[lane])),
                lif.current[lane].eq(fire_current[lane]),
                lif.threshold[lane].eq(theta_values[lane]),
            ]
        fired = Signal(lanes)
        m.d.comb += fired.eq(lif.spikes)
        with m.If(fire_valid):
            m.d.comb += [
                membrane_write.addr.eq(fire["group_index"]),
                membrane_write.data.eq(lanes_word(list(lif.next_membrane), bits["membrane"])),
                membrane_write.en.eq(1),
            ]
            for source, port in buffer_write.items():
                with m.If(desc.target == source):
                    chunks = buffer_widths[source] // lanes
                    m.d.comb += [
                        port.addr.eq(fire["word_address"]),
                        port.data.eq(Cat(*([fired] * chunks))),
                        port.en.eq(1 << (desc.chunk_offset + fire["chunk"])),
                    ]
            with m.If(desc.to_stream):
                m.d.comb += [
                    stream_write.addr.eq(fire["stream_address"]),
                    stream_write.data.eq(lanes_word(
                        [Mux(fired[lane], spike_values[lane], 0) for lane in range(lanes)],
                        bits["stream"])),
                    stream_write.en.eq(1),
                ]
            layer_count = Array(counts)[desc.layer]
            m.d.sync += layer_count.eq(layer_count + sum(fired[lane] for lane in range(lanes)))
        return m
