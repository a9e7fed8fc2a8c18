"""The compute core: the whole network of SPEC.md section 3 on ``lanes`` accumulator lanes.

A four-stage pipeline, fed one event per cycle and never stalled (each stage's memory
reads are issued by the stage before it):

- **walk** (the sequencer): steps through the passes of :class:`~stepvit.rtl.core_plan.CorePlan`
  and, for each group and chunk, walks the set bits of the input spike word with a
  :class:`~stepvit.rtl.spike_walker.SpikeWalker`; each set bit is one event that addresses
  a weight word (or a KV row). A chunk with no input spike is one event that only closes
  the chunk (its LIF still charges with the bias and leaks). Masked steps are skipped
  before they cost a cycle. The next spike word is prefetched, so chunks follow each other
  without a bubble. *Parallel heads*: when two or more whole heads fit in the lanes
  (``CoreGeometry.parallel_heads``), the attention's KV and Q·KV passes walk the heads of
  a chunk side by side, one walker each (walker 0 and ``head_walkers``); an event then
  carries one bit per walker that has one left, and the chunk ends when every walker has
  walked its last bit.
- **accumulate**: the event's weights (``lanes`` of them, shifted by the bit plane in the
  embedding) are added by :class:`~stepvit.rtl.accumulator.AccumulatorLanes`; the KV pass
  instead adds the token's V segment into a KV row here (read-modify-write). With parallel
  heads each walker has its own KV memory (its heads' rows) and its own ``head_dim`` lanes
  of the chunk, which add only when that walker has a bit.
- **sum**: a finished chunk gets its bias and operand (embedding current or residual
  stream) and is stored (embedding current, residual stream) or added into the logits,
  or goes on to
- **fire**: :class:`~stepvit.rtl.lif.LIFLanes` (spikes into a spike map, membranes back).

Every pass drains the pipeline before the next begins (the next reads what it wrote).
No multiplier: addresses advance by adding strides, words are picked by multiplexers
(a dynamic ``word_select`` would be a ``$mul``), and products of a pixel and a weight are
shifts of the weight over the pixel's bit planes.

The memories are in :mod:`~stepvit.rtl.core_memories`; the signals the stages share are
records in :mod:`~stepvit.rtl.core_pipeline`. :class:`StepvitCore` builds each stage in a
method named after it: ``_walk`` (with ``_prefetch``, ``_issue_events`` and the control
FSM ``_control``), ``_accumulate``, ``_sum`` and ``_fire``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring

from stepvit.model.export import Export
from stepvit.rtl.accumulator import AccumulatorLanes
from stepvit.rtl.core_memories import CoreMemories, add_core_memories
from stepvit.rtl.core_pipeline import (
    FIRE_FIELDS,
    SUM_FIELDS,
    ClosedChunk,
    Prefetch,
    RunState,
    Walk,
    chunk_shape,
    event_layout,
    fields_of,
)
from stepvit.rtl.core_plan import CorePlan, Operand, Sink, Source, WalkMask, WeightSource
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


def _lanes_word(values: list[Value], width: int) -> Value:
    """Return ``values`` packed ``width`` bits each, lane 0 lowest."""
    return Cat(*(value.as_unsigned()[:width] for value in values))


def _constants(values: list[int]) -> Array:
    """Return ``values`` as an array of constants, indexed by a multiplexer."""
    return Array(Const(v, max(max(values), 1).bit_length()) for v in values)


class StepvitCore(wiring.Component):
    """The network of ``export`` on ``lanes`` parallel accumulator lanes.

    Parameters
    ----------
    export : Export
        The validated export: shapes, widths, weights (memory contents) and thresholds.
    lanes : int
        Output channels computed in parallel, at most the widest output row; a layer's
        last chunk may be ragged and a chunk may span several heads (walked one at a
        time, or side by side when the lanes hold two or more whole heads).

    Members
    -------
    See :func:`stepvit.rtl.interface.core_signature`.
    """

    def __init__(self, export: Export, *, lanes: int) -> None:
        self.plan = CorePlan(export, lanes=lanes)
        self._head_in_layer = export.layer_names().index("head.in")
        super().__init__(core_signature(export))

    def elaborate(self, platform: object) -> Module:
        """Build the memories, the sequencer and the pipeline stages after it."""
        m = Module()
        memories = add_core_memories(m, self.plan)
        run = self._run_state(m)
        prefetch = self._prefetch(m, memories, run)
        walk = self._walk(m, run)
        events = self._issue_events(m, memories, run, walk)
        start_bank = self._load_patches(m, memories)
        self._control(m, run, walk, prefetch, start_bank)
        closed = self._accumulate(m, memories, run, events)
        charged = self._sum(m, memories, run, closed)
        self._fire(m, memories, run, charged)
        return m

    # --- run state ---------------------------------------------------------------------
    def _run_state(self, m: Module) -> RunState:
        """Make the state of a run and drive the logits and spike counts from it."""
        plan, geometry = self.plan, self.plan.geometry
        masks = Signal.like(self.masks)
        descriptor = Signal(plan.layout(), name="desc")
        pass_index = Signal(range(len(plan.passes) + 1))
        step_mask = Signal(geometry.t_max)
        module_mask = _select(m, [masks[i] for i in range(len(masks))], descriptor.module)
        # The head's counts have as many bit planes as its active steps times the tokens
        # need (none when the head is masked throughout): a masked step costs no plane.
        head_steps = sum(masks[len(masks) - 1][t] for t in range(geometry.t_max))
        head_planes = _select(m, [Const((steps * geometry.tokens).bit_length(),
                                        range(geometry.count_bits + 1))
                                  for steps in range(geometry.t_max + 1)], head_steps)
        m.d.comb += step_mask.eq(Mux(descriptor.once,
                                     Mux(descriptor.count_planes, head_planes != 0, 1),
                                     module_mask))
        stream_zero = Signal(geometry.t_max)
        logits = [Signal(signed(geometry.bits["logit"]), name=f"logit{k}")
                  for k in range(geometry.class_chunks * geometry.lanes)]
        counts = [Signal(32, name=f"count{i}") for i in range(len(self.spike_counts))]
        for k in range(geometry.num_classes):
            m.d.comb += self.logits[k].eq(logits[k])
        for i, count in enumerate(counts):
            m.d.comb += self.spike_counts[i].eq(count)
        return RunState(masks=masks, descriptor=descriptor, pass_index=pass_index,
                        step_mask=step_mask, stream_zero=stream_zero, logits=logits,
                        counts=counts, bank=Signal(name="run_bank"),
                        kv_restart=Signal(name="kv_restart"),
                        head_counts=[Signal(geometry.count_bits, name=f"head_count{c}")
                                     for c in range(geometry.dim_word_bits)],
                        head_planes=head_planes)

    def _word_base(self) -> Array:
        """Return the address of token 0 of each step in a spike map."""
        geometry = self.plan.geometry
        return _constants([t * geometry.tokens for t in range(geometry.t_max)])

    def _walk_mask(self, run: RunState, chunk: Value | int,
                   first_channel: Value | int) -> Value:
        """Return the bits of a spike word that ``chunk`` walks (:class:`WalkMask`).

        ``first_channel`` is the chunk's lane 0. Comparators, not a table: a table indexed
        by the chunk would be one more memory.
        """
        geometry = self.plan.geometry
        lanes, head_dim = geometry.lanes, geometry.head_dim
        mode = run.descriptor.walk_mask
        slots = geometry.parallel_heads
        if slots > 1:
            # walker 0 walks the first head of the chunk's group (the others, its next heads)
            first_heads = Cat(*(
                (Value.cast(chunk) == h // slots if h % slots == 0 else Const(0))
                .replicate(head_dim) for h in range(geometry.heads)))
            return Mux(mode == WalkMask.ALL, (1 << geometry.walk_bits) - 1, first_heads)
        heads_mask = Cat(*(
            Mux(mode == WalkMask.HEAD, chunk == h,
                (first_channel < (h + 1) * head_dim) & (first_channel + lanes > h * head_dim)
                ).replicate(head_dim)
            for h in range(geometry.heads)))
        return Mux(mode == WalkMask.ALL, (1 << geometry.walk_bits) - 1, heads_mask)

    def _next_active_step(self, m: Module, run: RunState,
                          after: Signal | None) -> tuple[Signal, Signal]:
        """Return (found, step): the first active step of the pass after ``after``."""
        t_max = self.plan.geometry.t_max
        found, step = Signal(), Signal(range(max(t_max, 2)))
        for candidate in reversed(range(t_max)):
            later = Const(1) if after is None else (after < candidate)
            with m.If(run.step_mask[candidate] & later):
                m.d.comb += [found.eq(1), step.eq(candidate)]
        return found, step

    # --- walk stage: prefetch, sequencer, spike walker ----------------------------------
    def _prefetch(self, m: Module, memories: CoreMemories, run: RunState) -> Prefetch:
        """Read the spike word (or patch) one word ahead of the walk, and find its successor."""
        geometry = self.plan.geometry
        t_max, tokens, dim = geometry.t_max, geometry.tokens, geometry.dim
        desc = run.descriptor
        fetch_step = Signal(range(max(t_max, 2)))
        fetch_group = Signal(range(max(tokens, dim, geometry.count_bits, 2)))
        fetch_valid = Signal()
        first_found, first_active = self._next_active_step(m, run, None)
        following_found, following_step = self._next_active_step(m, run, fetch_step)
        more_groups = fetch_group + 1 < Mux(desc.count_planes, run.head_planes, desc.groups)

        fetch_address = Signal(range(max(t_max * tokens, 2)))
        fetch_enable = Signal()
        for port in memories.buffer_read.values():
            m.d.comb += [port.addr.eq(fetch_address), port.en.eq(fetch_enable)]
        for port in memories.patch_read:
            m.d.comb += [port.en.eq(fetch_enable), port.addr.eq(fetch_address)]
        count_plane = Signal(geometry.dim_word_bits)  # read a cycle late, as the memories
        with m.If(fetch_enable):
            m.d.sync += count_plane.eq(Cat(*(
                count.bit_select(fetch_address[:max(1, (geometry.count_bits - 1).bit_length())],
                                 1)
                for count in run.head_counts)))
        source_data = Signal(geometry.walk_bits)
        with m.Switch(desc.source):
            with m.Case(Source.PATCH):
                m.d.comb += source_data.eq(Mux(run.bank, memories.patch_read[1].data,
                                               memories.patch_read[0].data))
            with m.Case(Source.COUNTS):
                m.d.comb += source_data.eq(count_plane)
            for source, port in memories.buffer_read.items():
                with m.Case(source):
                    m.d.comb += source_data.eq(port.data)
        value_data = Signal(dim)
        with m.Switch(desc.value_source):
            for source, port in memories.buffer_read.items():
                if source != Source.HIDDEN:
                    with m.Case(source):
                        m.d.comb += value_data.eq(port.data)
        return Prefetch(
            step=fetch_step, group=fetch_group, valid=fetch_valid,
            address=fetch_address, enable=fetch_enable,
            source_data=source_data, value_data=value_data,
            first_found=first_found, first_active=first_active,
            successor_valid=Mux(more_groups, 1, following_found),
            successor_step=Mux(more_groups, fetch_step, following_step),
            successor_group=Mux(more_groups, fetch_group + 1, 0),
        )

    def _walk(self, m: Module, run: RunState) -> Walk:
        """Make the walker and the position of the walk; an event leaves it when running."""
        geometry = self.plan.geometry
        layout = event_layout(self.plan)
        m.submodules.walker = walker = SpikeWalker(width=geometry.walk_bits)
        head_walkers = tuple(SpikeWalker(width=geometry.head_dim)
                             for _ in range(1, geometry.parallel_heads))
        for slot, head_walker in enumerate(head_walkers, start=1):
            m.submodules[f"head_walker{slot}"] = head_walker
        walkers = (walker, *head_walkers)
        step = Signal(range(max(geometry.t_max, 2)))
        group = Signal(range(max(geometry.tokens, geometry.dim, geometry.count_bits, 2)))
        chunk = Signal(chunk_shape(self.plan))
        first_channel = Signal(range(geometry.walk_bits + geometry.lanes + 1))
        group_index = Signal(layout["group_index"].shape)
        weight_row = Signal(range(max(len(self.plan.weight_words), 2)))
        first_event, first_step = Signal(), Signal()
        held_word = Signal(geometry.walk_bits)
        value_word = Signal(geometry.dim)
        running, emit = Signal(), Signal()
        any_bit = Cat(*(w.any for w in walkers)).any()
        m.d.comb += emit.eq(running & (any_bit | ~run.descriptor.skip_empty))
        return Walk(walker=walker, head_walkers=head_walkers, step=step, group=group,
                    chunk=chunk, first_channel=first_channel, group_index=group_index,
                    weight_row=weight_row, first_event=first_event, first_step=first_step,
                    held_word=held_word, value_word=value_word, running=running, emit=emit,
                    group_end=Cat(*(w.last | ~w.any for w in walkers)).all())

    def _issue_events(self, m: Module, memories: CoreMemories, run: RunState,
                      walk: Walk) -> data.View:
        """Drive this cycle's event, address its weight and KV reads, and register it."""
        geometry = self.plan.geometry
        tokens, head_dim = geometry.tokens, geometry.head_dim
        desc, walker, step = run.descriptor, walk.walker, walk.step
        stream_base = _constants([t * tokens * geometry.dim_chunks
                                  for t in range(geometry.t_max)])
        event = Signal(event_layout(self.plan))
        accumulate = Signal(event_layout(self.plan), name="acc")
        m.d.comb += [
            event.valid.eq(walk.emit),
            event.first.eq(walk.first_event),
            event.last.eq(walk.group_end),
            event.has_weight.eq(Cat(walker.any, *(w.any for w in walk.head_walkers))),
            event.plane.eq(Mux(desc.count_planes, walk.group, walker.index[:3])),
            event.chunk.eq(walk.chunk),
            event.head.eq(sum(walker.index >= h * head_dim
                              for h in range(1, geometry.heads))),
            event.group_index.eq(walk.group_index),
            event.first_step.eq(walk.first_step),
            event.stream_zero.eq(run.stream_zero.bit_select(step, 1)),
            event.word_address.eq(self._word_base()[step] + walk.group),
            event.stream_address.eq(stream_base[step] + walk.group_index),
            event.bias_address.eq(desc.bias_base + Mux(desc.bias_per_token,
                                                       walk.group_index, walk.chunk)),
            event.theta_address.eq(desc.theta_base + walk.chunk),
            memories.weight_read.addr.eq(walk.weight_row + Mux(
                desc.bit_planes, walker.index >> 3, walker.index)),
        ]
        self._kv_events(m, memories, run, walk, event, accumulate)
        m.d.sync += accumulate.eq(event)
        return accumulate

    def _kv_events(self, m: Module, memories: CoreMemories, run: RunState, walk: Walk,
                   event: data.View, accumulate: data.View) -> None:
        """Drive each walker's KV row, V segment and fresh flag, and read its KV memory.

        Walker ``j`` of chunk ``c`` walks head ``h = c * parallel_heads + j``, whose rows
        are rows ``c * head_dim ...`` of KV memory ``j`` (each step ``kv_rows`` of them).
        Walker 0 walks the whole word, so its bit index is the channel ``h * head_dim + i``;
        the other walkers walk the head's segment, so theirs is ``i``.
        """
        geometry = self.plan.geometry
        head_dim, slots, heads = geometry.head_dim, geometry.parallel_heads, geometry.heads
        chunk, step = walk.chunk, walk.step
        kv_base = _constants([t * geometry.kv_rows for t in range(geometry.t_max)])
        chunk_rows = _constants([c * head_dim for c in range(geometry.kv_chunks)])
        # walker 0's index is the channel c * slots * head_dim + i; its row is c * head_dim + i
        first_offset = _constants([c * (slots - 1) * head_dim for c in range(geometry.kv_chunks)])
        for slot in range(slots):
            if slot == 0:
                row = kv_base[step] + walk.walker.index - (first_offset[chunk] if slots > 1
                                                           else 0)
            else:
                row = kv_base[step] + chunk_rows[chunk] + walk.head_walkers[slot - 1].index
            segments = [walk.value_word[h * head_dim:(h + 1) * head_dim]
                        if (h := c * slots + slot) < heads else Const(0, head_dim)
                        for c in range(geometry.kv_chunks)]
            m.d.comb += [
                event.kv_address[slot].eq(row),
                event.value_segment[slot].eq(_select(m, segments, chunk)
                                             if len(segments) > 1 else segments[0]),
                memories.kv_read[slot].addr.eq(event.kv_address[slot]),
            ]
            # A KV row reads as zero until its first add in the block's KV pass: one flag a
            # row, all cleared as the pass begins (instead of a pass writing zeros), set by
            # the add; the add one stage ahead (to the same memory) is forwarded.
            kv_written = Signal(geometry.t_max * geometry.kv_rows, name=f"kv_written{slot}")
            adding = (accumulate.valid & accumulate.has_weight[slot]
                      & (run.descriptor.sink == Sink.KV_ADD))
            m.d.comb += event.kv_fresh[slot].eq(
                ~kv_written.bit_select(event.kv_address[slot], 1)
                & ~(adding & (accumulate.kv_address[slot] == event.kv_address[slot])))
            with m.If(adding):
                m.d.sync += kv_written.bit_select(accumulate.kv_address[slot], 1).eq(1)
            with m.If(run.kv_restart):
                m.d.sync += kv_written.eq(0)

    def _load_patches(self, m: Module, memories: CoreMemories) -> Signal:
        """Add the pixel loader (image words in, patch bit planes out) and its two banks.

        ``load`` fills the bank after the last one loaded, independently of the run, so
        the next image loads while this one computes. Returns the bank the next ``start``
        computes from.
        """
        geometry = self.plan.geometry
        m.submodules.loader = loader = PatchLoader(image_shape=geometry.image_shape,
                                                   patch=geometry.patch)
        load_bank, start_bank = Signal(), Signal()
        m.d.comb += [
            loader.start.eq(self.load), self.loaded.eq(loader.done),
            self.img_addr.eq(loader.img_addr), loader.img_data.eq(self.img_data),
        ]
        for bank, port in enumerate(memories.patch_write):
            m.d.comb += [port.addr.eq(loader.patch_addr), port.data.eq(loader.patch_data),
                         port.en.eq(Mux(load_bank == bank, loader.patch_enable, 0))]
        with m.If(loader.done):
            m.d.sync += load_bank.eq(~load_bank)
        with m.If(self.start):
            m.d.sync += start_bank.eq(~start_bank)
        return start_bank

    # --- control FSM --------------------------------------------------------------------
    def _control(self, m: Module, run: RunState, walk: Walk, prefetch: Prefetch,
                 start_bank: Signal) -> None:
        """Run every pass of a loaded image (prefetch, prime, walk, drain), take the argmax."""
        plan = self.plan
        layout = plan.layout()
        pass_rom = Array(Const(layout.const(p).as_value().value, layout.size)
                         for p in plan.passes)
        drain = Signal(range(DRAIN_CYCLES + 1))
        best = Signal(range(max(plan.geometry.num_classes, 2)))
        scan = Signal(range(plan.geometry.num_classes + 1))
        m.d.sync += self.done.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    self._start_run(m, run, start_bank)
                    m.next = "NEXT"
            with m.State("PREFETCH"):
                m.d.comb += run.kv_restart.eq(run.descriptor.sink == Sink.KV_ADD)
                with m.If(prefetch.first_found):
                    m.d.comb += [prefetch.enable.eq(1),
                                 prefetch.address.eq(self._word_base()[prefetch.first_active])]
                    m.d.sync += [prefetch.step.eq(prefetch.first_active),
                                 prefetch.group.eq(0)]
                    m.next = "PRIME"
                with m.Else():
                    m.d.sync += run.pass_index.eq(run.pass_index + 1)
                    m.next = "NEXT"
            with m.State("PRIME"):
                self._load_word(m, run, walk, prefetch, first_of_pass=True)
                m.next = "RUN"
            with m.State("RUN"):
                self._walk_cycle(m, run, walk, prefetch, drain)
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == DRAIN_CYCLES - 1):
                    m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(run.pass_index == len(plan.passes)):
                    m.d.sync += [best.eq(0), scan.eq(1)]
                    m.next = "ARGMAX"
                with m.Else():
                    m.d.sync += run.descriptor.eq(pass_rom[run.pass_index])
                    m.next = "PREFETCH"
            with m.State("ARGMAX"):
                self._argmax_cycle(m, run, best, scan)

    def _start_run(self, m: Module, run: RunState, start_bank: Signal) -> None:
        """Latch the masks and the bank, clear the counts, preset the logits."""
        geometry = self.plan.geometry
        m.d.sync += [
            run.masks.eq(self.masks), self.busy.eq(1), run.bank.eq(start_bank),
            run.stream_zero.eq(~self.masks[0]), run.pass_index.eq(0),
        ]
        m.d.sync += [count.eq(0) for count in (*run.counts, *run.head_counts)]
        m.d.sync += [logit.eq(self.plan.head_bias[k] if k < geometry.num_classes else 0)
                     for k, logit in enumerate(run.logits)]

    def _load_word(self, m: Module, run: RunState, walk: Walk, prefetch: Prefetch, *,
                   first_of_pass: bool) -> None:
        """Take the prefetched word as the current one and prefetch its successor."""
        desc = run.descriptor
        m.d.comb += [
            walk.walker.load.eq(1),
            walk.walker.word.eq(prefetch.source_data & self._walk_mask(run, 0, 0)),
            *self._load_head_walkers(run, walk, prefetch.source_data, 0),
            prefetch.enable.eq(1),
            prefetch.address.eq(self._word_base()[prefetch.successor_step]
                                + prefetch.successor_group),
        ]
        new_step = prefetch.step != walk.step
        m.d.sync += [
            walk.held_word.eq(prefetch.source_data), walk.value_word.eq(prefetch.value_data),
            walk.step.eq(prefetch.step), walk.group.eq(prefetch.group),
            prefetch.step.eq(prefetch.successor_step),
            prefetch.group.eq(prefetch.successor_group),
            prefetch.valid.eq(prefetch.successor_valid),
            walk.chunk.eq(0), walk.first_channel.eq(0),
            walk.weight_row.eq(desc.weight_base), walk.first_event.eq(1),
        ]
        if first_of_pass:
            m.d.sync += [walk.group_index.eq(0), walk.first_step.eq(1)]
        else:
            m.d.sync += walk.group_index.eq(Mux(new_step, 0, walk.group_index + 1))
            with m.If(new_step):
                m.d.sync += walk.first_step.eq(0)
                with m.If(desc.sink == Sink.STORE_STREAM):
                    m.d.sync += run.stream_zero.bit_select(walk.step, 1).eq(0)

    def _walk_cycle(self, m: Module, run: RunState, walk: Walk, prefetch: Prefetch,
                    drain: Signal) -> None:
        """Step the walker; at a chunk's end go on to the next chunk, word, or the drain."""
        desc = run.descriptor
        m.d.comb += [walk.running.eq(1), walk.walker.step.eq(1),
                     *(walker.step.eq(1) for walker in walk.head_walkers)]
        with m.If(walk.group_end):
            with m.If(walk.chunk + 1 < desc.chunks):
                self._next_chunk(m, run, walk)
            with m.Elif(prefetch.valid):
                self._load_word(m, run, walk, prefetch, first_of_pass=False)
            with m.Else():
                with m.If(desc.sink == Sink.STORE_STREAM):
                    m.d.sync += run.stream_zero.bit_select(walk.step, 1).eq(0)
                m.d.sync += [drain.eq(0), run.pass_index.eq(run.pass_index + 1)]
                m.next = "DRAIN"
        with m.Elif(walk.emit):
            m.d.sync += walk.first_event.eq(0)

    def _next_chunk(self, m: Module, run: RunState, walk: Walk) -> None:
        """Walk the held word again for the next output chunk (masked to its heads)."""
        desc = run.descriptor
        lanes = self.plan.geometry.lanes
        m.d.comb += [walk.walker.load.eq(1),
                     walk.walker.word.eq(walk.held_word & self._walk_mask(
                         run, walk.chunk + 1, walk.first_channel + lanes)),
                     *self._load_head_walkers(run, walk, walk.held_word, walk.chunk + 1)]
        m.d.sync += [
            walk.chunk.eq(walk.chunk + 1), walk.first_channel.eq(walk.first_channel + lanes),
            walk.weight_row.eq(walk.weight_row + desc.input_len),
            walk.group_index.eq(walk.group_index + 1), walk.first_event.eq(1),
        ]

    def _load_head_walkers(self, run: RunState, walk: Walk, word: Value,
                           chunk: Value | int) -> list:
        """Return the loads of walkers 1, 2, ...: each its head's segment of ``word``.

        Walker ``j`` of ``chunk`` walks head ``chunk * parallel_heads + j``, in the KV and
        Q·KV passes only (nothing in the others, and past the last head).
        """
        geometry = self.plan.geometry
        head_dim, slots = geometry.head_dim, geometry.parallel_heads
        in_heads = run.descriptor.walk_mask != WalkMask.ALL
        statements = []
        for slot, walker in enumerate(walk.head_walkers, start=1):
            segments = {c: word[h * head_dim:(h + 1) * head_dim]
                        for c in range(geometry.kv_chunks)
                        if (h := c * slots + slot) < geometry.heads}
            if isinstance(chunk, int):
                segment = segments.get(chunk, Const(0, head_dim))
            else:
                segment = Const(0, head_dim)
                for c, value in segments.items():
                    segment = Mux(chunk == c, value, segment)
            statements += [walker.load.eq(1), walker.word.eq(Mux(in_heads, segment, 0))]
        return statements

    def _argmax_cycle(self, m: Module, run: RunState, best: Signal, scan: Signal) -> None:
        """Compare one logit with the best so far; after the last, report and go idle."""
        # The first maximum wins: only a strictly larger logit moves the choice.
        logit_array = Array(run.logits)
        with m.If(scan == self.plan.geometry.num_classes):
            m.d.sync += [self.predicted.eq(best), self.busy.eq(0), self.done.eq(1)]
            m.next = "IDLE"
        with m.Else():
            with m.If(logit_array[scan] > logit_array[best]):
                m.d.sync += best.eq(scan)
            m.d.sync += scan.eq(scan + 1)

    # --- accumulate stage ---------------------------------------------------------------
    def _accumulate(self, m: Module, memories: CoreMemories, run: RunState,
                    acc: data.View) -> ClosedChunk:
        """Add the event's weights (or KV values) in the lanes; hand a closed chunk on."""
        geometry = self.plan.geometry
        lanes = geometry.lanes
        desc = run.descriptor
        m.submodules.lanes = lanes_unit = AccumulatorLanes(
            lanes=lanes, addend_bits=geometry.addend_bits, sum_bits=geometry.sum_bits)
        head_dim, slots = geometry.head_dim, geometry.parallel_heads
        weight_values = _lanes_of(memories.weight_read.data, lanes, 8, is_signed=True)
        # Each walker's KV row as read: zero until its first add in the block's KV pass.
        kv_rows = [_lanes_of(Mux(acc.kv_fresh[slot], 0, port.data), head_dim,
                             geometry.bits["attention"], is_signed=False)
                   for slot, port in enumerate(memories.kv_read)]
        kv_values = self._kv_lanes(m, kv_rows, acc)
        plane = Mux(desc.bit_planes | desc.count_planes, acc.plane, 0)
        m.d.comb += [lanes_unit.valid.eq(acc.valid), lanes_unit.first.eq(acc.first)]
        is_kv = desc.weights == WeightSource.KV
        for lane in range(lanes):
            addend = Mux(is_kv, kv_values[lane], weight_values[lane] << plane)
            # In the Q·KV pass a head's lanes add only when its own walker has a bit.
            slot = lane // head_dim if lane < slots * head_dim else 0
            enable = Mux(is_kv, acc.has_weight[slot], acc.has_weight[0])
            m.d.comb += lanes_unit.addend[lane].eq(Mux(enable, addend, 0))
        for slot in range(slots):
            self._add_value_to_kv(m, memories, run, kv_rows[slot], acc, slot)

        sink = Signal(fields_of(event_layout(self.plan), SUM_FIELDS), name="sink")
        sink_valid = Signal()
        sink_sum = Signal(lanes_unit.total.shape())
        closing = acc.valid & acc.last
        m.d.sync += sink_valid.eq(closing)
        with m.If(closing):
            m.d.sync += [sink[name].eq(acc[name]) for name in SUM_FIELDS]
            m.d.sync += sink_sum.eq(lanes_unit.total)
        m.d.comb += [
            memories.current_read.addr.eq(acc.group_index),
            memories.stream_read.addr.eq(acc.stream_address),
            memories.bias_read.addr.eq(acc.bias_address),
        ]
        return ClosedChunk(valid=sink_valid, event=sink, values=sink_sum)

    def _kv_lanes(self, m: Module, rows: list[list[Value]], acc: data.View) -> list[Value]:
        """Return per lane what a Q bit adds in the Q·KV pass.

        That is its KV row's value for the lane's channel when the channel is in the bit's
        head, else 0. With parallel heads, the chunk's lanes are its heads' in order: lane
        ``j * head_dim + i`` gets element ``i`` of walker ``j``'s row (``rows[j]``).
        """
        geometry = self.plan.geometry
        lanes, head_dim, bits = geometry.lanes, geometry.head_dim, geometry.bits["attention"]
        slots = geometry.parallel_heads
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
            values.append(_select(m, options, acc.chunk) if len(options) > 1 else options[0])
        return values

    def _add_value_to_kv(self, m: Module, memories: CoreMemories, run: RunState,
                         row: list[Value], acc: data.View, slot: int) -> None:
        """In the KV pass, add walker ``slot``'s V segment into its KV row (read-modify-write)."""
        geometry = self.plan.geometry
        attention_bits = geometry.bits["attention"]
        kv_write = memories.kv_write[slot]
        with m.If(acc.valid & acc.has_weight[slot] & (run.descriptor.sink == Sink.KV_ADD)):
            m.d.comb += [
                kv_write.addr.eq(acc.kv_address[slot]),
                kv_write.data.eq(Cat(*(
                    (value + acc.value_segment[slot][j])[:attention_bits]
                    for j, value in enumerate(row)))),
                kv_write.en.eq(1),
            ]

    # --- sum stage ----------------------------------------------------------------------
    def _current_bits(self) -> int:
        """Return the signed width of a finished sum with its bias and operand."""
        geometry = self.plan.geometry
        return max(geometry.sum_bits, geometry.bias_bits, geometry.bits["stream"],
                   geometry.bits["embed_current"]) + 2

    def _sum(self, m: Module, memories: CoreMemories, run: RunState,
             closed: ClosedChunk) -> ClosedChunk:
        """Give a finished sum its bias and operand; store it, or hand it to the fire stage."""
        geometry = self.plan.geometry
        lanes, current_bits = geometry.lanes, self._current_bits()
        totals = self._totals(m, memories, run, closed)
        # A LIF chunk goes on to the fire stage (its own cycle: the sum and the LIF each
        # chain several adders); the other sinks write here.
        fire = Signal(fields_of(event_layout(self.plan), FIRE_FIELDS), name="fire")
        fire_valid = Signal()
        fire_current = [Signal(signed(current_bits), name=f"fire_current{lane}")
                        for lane in range(lanes)]
        m.d.sync += fire_valid.eq(closed.valid & (run.descriptor.sink == Sink.LIF))
        m.d.sync += [fire[name].eq(closed.event[name]) for name in FIRE_FIELDS]
        m.d.sync += [held.eq(total) for held, total in zip(fire_current, totals)]
        m.d.comb += [
            memories.membrane_read.addr.eq(closed.event.group_index),
            memories.theta_read.addr.eq(closed.event.theta_address),
            memories.spike_value_read.addr.eq(closed.event.chunk),
        ]
        self._store(m, memories, run, closed, totals)
        return ClosedChunk(valid=fire_valid, event=fire, values=fire_current)

    def _totals(self, m: Module, memories: CoreMemories, run: RunState,
                closed: ClosedChunk) -> list[Signal]:
        """Return per lane the sum plus its operand (embedding current or stream) and bias."""
        geometry = self.plan.geometry
        lanes, bits, current_bits = geometry.lanes, geometry.bits, self._current_bits()
        desc = run.descriptor
        bias_values = _lanes_of(memories.bias_read.data, lanes, geometry.bias_bits,
                                is_signed=True)
        current_values = _lanes_of(memories.current_read.data, lanes, bits["embed_current"],
                                   is_signed=True)
        stream_values = _lanes_of(memories.stream_read.data, lanes, bits["stream"],
                                  is_signed=True)
        totals = []
        for lane in range(lanes):
            operand = Signal(signed(current_bits), name=f"operand{lane}")
            with m.Switch(desc.operand):
                with m.Case(Operand.CURRENT):
                    m.d.comb += operand.eq(current_values[lane])
                with m.Case(Operand.STREAM):
                    m.d.comb += operand.eq(Mux(closed.event.stream_zero, 0,
                                               stream_values[lane]))
            total = Signal(signed(current_bits), name=f"total{lane}")
            m.d.comb += total.eq(closed.values[lane] + operand
                                 + Mux(desc.use_bias, bias_values[lane], 0))
            totals.append(total)
        return totals

    def _store(self, m: Module, memories: CoreMemories, run: RunState, closed: ClosedChunk,
               totals: list[Signal]) -> None:
        """Write a finished chunk to its sink: embedding current, stream, logits."""
        geometry = self.plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        sink = closed.event
        with m.If(closed.valid):
            with m.Switch(run.descriptor.sink):
                with m.Case(Sink.STORE_CURRENT):
                    m.d.comb += [
                        memories.current_write.addr.eq(sink.group_index),
                        memories.current_write.data.eq(_lanes_word(totals,
                                                                   bits["embed_current"])),
                        memories.current_write.en.eq(1),
                    ]
                with m.Case(Sink.STORE_STREAM):
                    m.d.comb += [
                        memories.stream_write.addr.eq(sink.stream_address),
                        memories.stream_write.data.eq(_lanes_word(totals, bits["stream"])),
                        memories.stream_write.en.eq(1),
                    ]
                with m.Case(Sink.LOGITS):
                    for k, logit in enumerate(run.logits):
                        with m.If(sink.chunk == k // lanes):
                            m.d.sync += logit.eq(logit + closed.values[k % lanes])

    # --- fire stage ---------------------------------------------------------------------
    def _fire(self, m: Module, memories: CoreMemories, run: RunState,
              charged: ClosedChunk) -> None:
        """Charge, fire and reset the chunk's LIF lanes; write membranes, spikes, stream."""
        geometry = self.plan.geometry
        lanes, bits = geometry.lanes, geometry.bits
        desc, fire = run.descriptor, charged.event
        m.submodules.lif = lif = LIFLanes(
            lanes=lanes, membrane_bits=bits["membrane"], current_bits=self._current_bits(),
            leak_shift=geometry.leak_shift, reset=geometry.reset)
        theta_values = _lanes_of(memories.theta_read.data, lanes, bits["membrane"],
                                 is_signed=True)
        membrane_values = _lanes_of(memories.membrane_read.data, lanes, bits["membrane"],
                                    is_signed=True)
        spike_values = _lanes_of(memories.spike_value_read.data, lanes, bits["stream"],
                                 is_signed=True)
        for lane in range(lanes):
            m.d.comb += [
                lif.membrane[lane].eq(Mux(fire.first_step, 0, membrane_values[lane])),
                lif.current[lane].eq(charged.values[lane]),
                lif.threshold[lane].eq(theta_values[lane]),
            ]
        fired = Signal(lanes)
        m.d.comb += fired.eq(lif.spikes & self._channel_lanes(run, fire.chunk))
        with m.If(charged.valid):
            m.d.comb += [
                memories.membrane_write.addr.eq(fire.group_index),
                memories.membrane_write.data.eq(_lanes_word(list(lif.next_membrane),
                                                            bits["membrane"])),
                memories.membrane_write.en.eq(1),
            ]
            self._write_spikes(m, memories, run, fire, fired)
            with m.If(desc.to_stream):
                m.d.comb += [
                    memories.stream_write.addr.eq(fire.stream_address),
                    memories.stream_write.data.eq(_lanes_word(
                        [Mux(fired[lane], spike_values[lane], 0) for lane in range(lanes)],
                        bits["stream"])),
                    memories.stream_write.en.eq(1),
                ]
        # The spike count is added a cycle later: membrane read, LIF and a wide count adder
        # in one cycle were the design's longest path (rtl/timing.py). Nothing reads the
        # counts before the argmax, cycles after the last LIF chunk.
        fired_held = Signal(lanes)
        count_layer = Signal.like(desc.layer)
        count_chunk = Signal.like(fire.chunk)
        count_valid = Signal()
        m.d.sync += [fired_held.eq(fired), count_layer.eq(desc.layer),
                     count_chunk.eq(fire.chunk), count_valid.eq(charged.valid)]
        with m.If(count_valid):
            layer_count = Array(run.counts)[count_layer]
            m.d.sync += layer_count.eq(layer_count + sum(fired_held[lane]
                                                          for lane in range(lanes)))
        # head.in also counts per channel: the head's input (its COUNTS pass)
        with m.If(count_valid & (count_layer == self._head_in_layer)):
            for chunk in range(geometry.dim_chunks):
                with m.If(count_chunk == chunk):
                    for lane in range(lanes):
                        count = run.head_counts[chunk * lanes + lane]
                        m.d.sync += count.eq(count + fired_held[lane])

    def _channel_lanes(self, run: RunState, chunk: Value) -> Value:
        """Return the lanes of ``chunk`` that are channels of the layer.

        A ragged last chunk has fewer: of the MLP's hidden layer when the pass writes it,
        else of ``dim``.
        """
        geometry, lanes = self.plan.geometry, self.plan.geometry.lanes
        desc = run.descriptor

        def valid(width: int, chunks: int, index: Value) -> Value:
            last = width - (chunks - 1) * lanes  # lanes of the last chunk
            return Mux(index == chunks - 1, (1 << last) - 1, (1 << lanes) - 1)

        return Mux(desc.target == Source.HIDDEN,
                   valid(geometry.mlp_dim, geometry.mlp_chunks, desc.chunk_offset + chunk),
                   valid(geometry.dim, geometry.dim_chunks, chunk))

    def _write_spikes(self, m: Module, memories: CoreMemories, run: RunState,
                      fire: data.View, fired: Signal) -> None:
        """Write the fired chunk into the target spike map (the chunk's lanes of the word)."""
        desc, lanes = run.descriptor, self.plan.geometry.lanes
        for source, port in memories.buffer_write.items():
            with m.If(desc.target == source):
                chunks = memories.buffer_widths[source] // lanes
                m.d.comb += [
                    port.addr.eq(fire.word_address),
                    port.data.eq(Cat(*([fired] * chunks))),
                    port.en.eq(1 << (desc.chunk_offset + fire.chunk)),
                ]
