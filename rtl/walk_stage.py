"""The core's walk stage: the walk over each input word's set bits, and the events it issues.

The first stage of :class:`~stepvit.rtl.core.StepvitCore`'s pipeline. Within a pass (the
control FSM says when a pass restarts, primes and runs) it takes each input word (spike
word, patch, or head.in's count plane) that :class:`~stepvit.rtl.prefetch.SpikeWordPrefetch`
read ahead (again for each output chunk, and segment by segment where a token's spikes are
several words), walks its set bits with a :class:`~stepvit.rtl.spike_walker.SpikeWalker`
(and, with parallel heads, one walker per head of the chunk), and issues one event a cycle:
each set bit addresses a weight word (or a KV row). A word with no input spike is one
event that adds nothing (the last segment's closes the chunk: its LIF still charges with
the bias and leaks). Chunks and words follow each other without a bubble. It also keeps which
steps' residual stream is still all zero, and which KV rows the block's KV pass has not
added to yet.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.rtl.core_pipeline import (
    Walk,
    check_plan,
    chunk_shape,
    constants,
    event_layout,
    fetched_layout,
    select,
)
from stepvit.rtl.core_plan import CorePlan, Sink, WalkMask
from stepvit.rtl.spike_walker import SpikeWalker


class WalkStage(wiring.Component):
    """Walk the set bits of each pass's spike words; issue one addressed event a cycle.

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry, pass layout and weight memory.

    Members
    -------
    descriptor : In(plan.layout())
        The pass being run.
    begin, embedding_steps : In(1), In(t_max)
        Pulse: a run starts, with the embedding active at these steps (the stream of the
        others is all zero until a pass stores it).
    restart : In(1)
        The control FSM starts a pass (the KV pass forgets its rows).
    prime : In(1)
        The cycle after ``restart``: take the pass's first word.
    run : In(1)
        Walk: issue an event this cycle.
    hold : In(1)
        With ``run``: do not walk this cycle (no event, no word taken; the pipeline after
        the walk sees a cycle without an event).
    pass_done : Out(1)
        This cycle's event is the pass's last.
    closes : Out(1)
        This cycle's event, if the walk runs and is not held, closes a chunk (whatever
        ``hold`` is: the hold of a stream kept in DDR is decided on it).
    fetched : In(fetched_layout(plan))
        The next word, read ahead by :class:`~stepvit.rtl.prefetch.SpikeWordPrefetch`.
    advance : Out(1)
        The walk takes the word: read the one after it.
    weight_address, bias_address : Out
        The weight word and the biases of this cycle's event (read for the accumulate
        stage).
    kv_address : Out(ArrayLayout(range, parallel_heads))
        Each walker's KV row of this cycle's event (read for the accumulate stage).
    event : Out(event_layout(plan))
        The event issued in the cycle before (registered): the accumulate stage's input.
    """

    def __init__(self, *, plan: CorePlan) -> None:
        self._plan = check_plan(plan)
        geometry = plan.geometry
        layout = event_layout(plan)
        super().__init__({
            "descriptor": In(plan.layout()),
            "begin": In(1),
            "embedding_steps": In(geometry.t_max),
            "restart": In(1),
            "prime": In(1),
            "hold": In(1),
            "run": In(1),
            "pass_done": Out(1),
            "closes": Out(1),
            "fetched": In(fetched_layout(plan)),
            "advance": Out(1),
            "weight_address": Out(range(max(len(plan.weight_words), 2))),
            "bias_address": Out(layout["bias_address"].shape),
            "kv_address": Out(data.ArrayLayout(layout["kv_address"].shape.elem_shape,
                                               geometry.parallel_heads)),
            "event": Out(layout),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the walkers, the event register and the pass's moves."""
        m = Module()
        stream_zero = Signal(self._plan.geometry.t_max)
        kv_restart = Signal()
        walk = self._walk(m)
        self._issue_events(m, walk, stream_zero, kv_restart)
        with m.If(self.begin):
            m.d.sync += stream_zero.eq(~self.embedding_steps)
        with m.If(self.restart):
            m.d.comb += kv_restart.eq(self.descriptor.sink == Sink.KV_ADD)
        with m.If(self.prime):
            self._load_word(m, walk, stream_zero, first_of_pass=True)
        with m.If(self.run & ~self.hold):
            self._walk_cycle(m, walk, stream_zero)
        return m

    def _word_base(self) -> Array:
        """Return the address of token 0 of each step in a spike map."""
        geometry = self._plan.geometry
        return constants([t * geometry.tokens for t in range(geometry.t_max)])

    def _walk_mask(self, lane_base: Value) -> Value:
        """Return the bits of the walked word (segment) its chunk walks (:class:`WalkMask`).

        ``lane_base`` is the chunk's first channel within the segment (the prefetch keeps
        it by adding): in the attention's passes the word is the segment of the chunk's
        heads, and each head's place there is compared with it (comparators, not a table:
        a table indexed by the chunk would be one more memory). The KV pass's chunk is a
        head (or a group of heads walked side by side, as the Q·KV pass's then): its first
        head starts at ``lane_base``; a Q·KV chunk of one walker walks every head its lanes
        overlap.
        """
        geometry = self._plan.geometry
        lanes, head_dim = geometry.lanes, geometry.head_dim
        mode = self.descriptor.walk_mask
        segment_bits = geometry.word_bits(geometry.dim_word_bits)
        places = range(min(segment_bits, geometry.dim) // head_dim)  # heads in a segment
        all_bits = (1 << geometry.walker_bits) - 1
        first_head = [lane_base == j * head_dim for j in places]
        if geometry.parallel_heads > 1:
            # walker 0 walks the first head of the chunk's group (the others, its next heads)
            return Mux(mode == WalkMask.ALL, all_bits,
                       Cat(*(first.replicate(head_dim) for first in first_head)))
        heads_mask = Cat(*(
            Mux(mode == WalkMask.HEAD, first_head[j],
                (lane_base < (j + 1) * head_dim) & (lane_base + lanes > j * head_dim)
                ).replicate(head_dim)
            for j in places))
        return Mux(mode == WalkMask.ALL, all_bits, heads_mask)

    def _walk(self, m: Module) -> Walk:
        """Make the walker and the position of the walk; an event leaves it when running."""
        geometry = self._plan.geometry
        layout = event_layout(self._plan)
        m.submodules.walker = walker = SpikeWalker(width=geometry.walker_bits)
        head_walkers = tuple(SpikeWalker(width=geometry.head_dim)
                             for _ in range(1, geometry.parallel_heads))
        for slot, head_walker in enumerate(head_walkers, start=1):
            m.submodules[f"head_walker{slot}"] = head_walker
        walkers = (walker, *head_walkers)
        step = Signal(range(max(geometry.t_max, 2)))
        group = Signal(range(max(geometry.tokens, geometry.dim, geometry.count_bits, 2)))
        chunk = Signal(chunk_shape(self._plan))
        part = Signal.like(self.fetched.part)
        channel_base = (Signal(range(geometry.walk_bits), name="channel_base")
                        if geometry.max_segments > 1 else Const(0, 1))
        group_index = Signal(layout["group_index"].shape)
        weight_row = Signal(range(max(len(self._plan.weight_words), 2)))
        first_event, first_step = Signal(), Signal()
        value_word = Signal(geometry.word_bits(geometry.dim_word_bits))
        running, emit = Signal(), Signal()
        any_bit = Cat(*(w.any for w in walkers)).any()
        m.d.comb += emit.eq(running & (any_bit | ~self.descriptor.skip_empty))
        return Walk(walker=walker, head_walkers=head_walkers, step=step, group=group,
                    chunk=chunk, part=part, channel_base=channel_base,
                    group_index=group_index, weight_row=weight_row, first_event=first_event,
                    first_step=first_step, value_word=value_word, running=running,
                    emit=emit, group_end=Cat(*(w.last | ~w.any for w in walkers)).all())

    def _issue_events(self, m: Module, walk: Walk, stream_zero: Signal,
                      kv_restart: Signal) -> None:
        """Drive this cycle's event, address its weight and KV reads, and register it."""
        geometry = self._plan.geometry
        tokens, head_dim = geometry.tokens, geometry.head_dim
        desc, walker, step = self.descriptor, walk.walker, walk.step
        stream_base = constants([t * tokens * geometry.dim_chunks
                                  for t in range(geometry.t_max)])
        event = Signal(event_layout(self._plan))
        channel = walk.channel_base + walker.index  # the walked bit's input channel
        m.d.comb += self.closes.eq(walk.group_end & ((walk.part + 1 == desc.segments)
                                                     | desc.skip_empty))
        m.d.comb += [
            event.valid.eq(walk.emit),
            event.first.eq(walk.first_event),
            # a chunk closes at its last segment (a pass that skips empty words closes
            # each segment: the logits add every segment's sum)
            event.last.eq(self.closes),
            event.has_weight.eq(Cat(walker.any, *(w.any for w in walk.head_walkers))),
            event.plane.eq(Mux(desc.count_planes, walk.group, walker.index[:3])),
            event.chunk.eq(walk.chunk),
            event.head.eq(sum(channel >= h * head_dim for h in range(1, geometry.heads))),
            event.group_index.eq(walk.group_index),
            event.first_step.eq(walk.first_step),
            event.stream_zero.eq(stream_zero.bit_select(step, 1)),
            event.word_address.eq(self._word_base()[step] + walk.group),
            event.stream_address.eq(stream_base[step] + walk.group_index),
            event.bias_address.eq(desc.bias_base + Mux(desc.bias_per_token,
                                                       walk.group_index, walk.chunk)),
            event.theta_address.eq(desc.theta_base + walk.chunk),
            self.weight_address.eq(walk.weight_row + Mux(desc.bit_planes, channel >> 3,
                                                          channel)),
        ]
        m.d.comb += self.bias_address.eq(event.bias_address)
        self._kv_events(m, walk, event, kv_restart, channel)
        m.d.sync += self.event.eq(event)

    def _kv_events(self, m: Module, walk: Walk, event: data.View, kv_restart: Signal,
                   channel: Value) -> None:
        """Drive each walker's KV row, V segment and fresh flag, and read its KV memory.

        Walker ``j`` of chunk ``c`` walks head ``h = c * parallel_heads + j``, whose rows
        are rows ``c * head_dim ...`` of KV memory ``j`` (each step ``kv_rows`` of them).
        Walker 0 walks the whole word (segment), so its ``channel`` is ``h * head_dim + i``;
        the other walkers walk the head's channels, so theirs is ``i``.
        """
        geometry = self._plan.geometry
        head_dim, slots, heads = geometry.head_dim, geometry.parallel_heads, geometry.heads
        chunk, step, accumulate = walk.chunk, walk.step, self.event
        kv_base = constants([t * geometry.kv_rows for t in range(geometry.t_max)])
        chunk_rows = constants([c * head_dim for c in range(geometry.kv_chunks)])
        # walker 0's index is the channel c * slots * head_dim + i; its row is c * head_dim + i
        first_offset = constants([c * (slots - 1) * head_dim for c in range(geometry.kv_chunks)])
        for slot in range(slots):
            if slot == 0:
                row = kv_base[step] + channel - (first_offset[chunk] if slots > 1 else 0)
            else:
                row = kv_base[step] + chunk_rows[chunk] + walk.head_walkers[slot - 1].index
            segments = [walk.value_word[(start := self._head_start(h)):start + head_dim]
                        if (h := c * slots + slot) < heads else Const(0, head_dim)
                        for c in range(geometry.kv_chunks)]
            m.d.comb += [
                event.kv_address[slot].eq(row),
                event.value_segment[slot].eq(select(m, segments, chunk)
                                             if len(segments) > 1 else segments[0]),
                self.kv_address[slot].eq(event.kv_address[slot]),
            ]
            # A KV row reads as zero until its first add in the block's KV pass: one flag a
            # row, all cleared as the pass begins (instead of a pass writing zeros), set by
            # the add; the add one stage ahead (to the same memory) is forwarded.
            kv_written = Signal(geometry.t_max * geometry.kv_rows, name=f"kv_written{slot}")
            adding = (accumulate.valid & accumulate.has_weight[slot]
                      & (self.descriptor.sink == Sink.KV_ADD))
            m.d.comb += event.kv_fresh[slot].eq(
                ~kv_written.bit_select(event.kv_address[slot], 1)
                & ~(adding & (accumulate.kv_address[slot] == event.kv_address[slot])))
            with m.If(adding):
                m.d.sync += kv_written.bit_select(accumulate.kv_address[slot], 1).eq(1)
            with m.If(kv_restart):
                m.d.sync += kv_written.eq(0)

    def _head_start(self, head: int) -> int:
        """Return the bit of a ``dim`` word's segment where ``head``'s channels start."""
        geometry = self._plan.geometry
        return head * geometry.head_dim % geometry.word_bits(geometry.dim_word_bits)

    def _load_word(self, m: Module, walk: Walk, stream_zero: Signal, *,
                   first_of_pass: bool) -> None:
        """Take the prefetched word as the walked one and prefetch its successor.

        The word is the next segment of the chunk, the next chunk's first (the same group's
        word again: its weight row and group index advance), or the next group's first.
        """
        desc, fetched = self.descriptor, self.fetched
        geometry = self._plan.geometry
        m.d.comb += [
            walk.walker.load.eq(1),
            walk.walker.word.eq(fetched.source & self._walk_mask(fetched.lane_base)),
            *self._load_head_walkers(walk, fetched.source, fetched.chunk),
            self.advance.eq(1),
        ]
        m.d.sync += [walk.value_word.eq(fetched.value), walk.part.eq(fetched.part),
                     walk.chunk.eq(fetched.chunk)]
        if geometry.max_segments > 1:
            m.d.sync += walk.channel_base.eq(fetched.channel)
        new_chunk = fetched.part == 0
        # the chunk's sum starts at its first segment (each segment's, in a pass that
        # closes every segment)
        m.d.sync += walk.first_event.eq(new_chunk | desc.skip_empty)
        if first_of_pass:
            self._load_group(m, walk, stream_zero, first_of_pass=True)
            return
        with m.If(new_chunk & (fetched.chunk == 0)):
            self._load_group(m, walk, stream_zero, first_of_pass=False)
        with m.Elif(new_chunk):
            m.d.sync += [walk.weight_row.eq(walk.weight_row + desc.input_len),
                         walk.group_index.eq(walk.group_index + 1)]

    def _load_group(self, m: Module, walk: Walk, stream_zero: Signal, *,
                    first_of_pass: bool) -> None:
        """Move the walk to the prefetched word's group (and step): its chunk 0."""
        desc, fetched = self.descriptor, self.fetched
        new_step = fetched.step != walk.step
        m.d.sync += [walk.step.eq(fetched.step), walk.group.eq(fetched.group),
                     walk.weight_row.eq(desc.weight_base)]
        if first_of_pass:
            m.d.sync += [walk.group_index.eq(self._first_index()), walk.first_step.eq(1)]
        else:
            m.d.sync += walk.group_index.eq(Mux(new_step, self._first_index(),
                                                walk.group_index + self._word_stride()))
            with m.If(new_step):
                m.d.sync += walk.first_step.eq(0)
                with m.If(self._completes_stream()):
                    m.d.sync += stream_zero.bit_select(walk.step, 1).eq(0)

    def _completes_stream(self) -> Value:
        """Return whether the pass's stores complete the stream of a step it walks.

        After a storing pass (proj, fc2) a step's stream is no longer all zero
        (``stream_zero``). Of a layer split into slices (:attr:`CorePlan.split`) only the
        last slice completes it: until then the chunks past the slice's still hold the last
        image's values, so the slices before it must read them as zero.
        """
        desc = self.descriptor
        stores = desc.sink == Sink.STORE_STREAM
        if not self._plan.split:
            return stores
        last_chunk = desc.chunk_offset + desc.chunks == self._plan.geometry.dim_chunks
        return stores & last_chunk

    def _first_index(self) -> Value | int:
        """Return the group index of a step's first chunk.

        In a plan with split passes (:attr:`CorePlan.split`) a pass that stores (the
        embedding's current, the stream, the logits) counts the true index
        ``token * dim_chunks + chunk_offset + chunk``, the address of per-token data (the
        stream, the embedding's current and biases); a LIF pass counts its own chunks (its
        membranes: a slice's are its own), as every pass does in a plan without.
        """
        if not self._plan.split:
            return 0
        desc = self.descriptor
        return Mux(desc.sink == Sink.LIF, 0, desc.chunk_offset)

    def _word_stride(self) -> Value | int:
        """Return what the group index adds from a word's last chunk to the next's first.

        The chunks of the dim the slice skips (``dim_chunks - chunks``) and one, in a
        storing pass of a plan with split passes (:meth:`_first_index`); else one.
        """
        if not self._plan.split:
            return 1
        desc = self.descriptor
        return Mux(desc.sink == Sink.LIF, 1, self._plan.geometry.dim_chunks + 1 - desc.chunks)

    def _walk_cycle(self, m: Module, walk: Walk, stream_zero: Signal) -> None:
        """Step the walker; at a word's end take the next (segment, chunk or group), or end."""
        m.d.comb += [walk.running.eq(1), walk.walker.step.eq(1),
                     *(walker.step.eq(1) for walker in walk.head_walkers)]
        with m.If(walk.group_end):
            with m.If(self.fetched.valid):
                self._load_word(m, walk, stream_zero, first_of_pass=False)
            with m.Else():
                with m.If(self._completes_stream()):
                    m.d.sync += stream_zero.bit_select(walk.step, 1).eq(0)
                m.d.comb += self.pass_done.eq(1)
        with m.Elif(walk.emit):
            m.d.sync += walk.first_event.eq(0)

    def _load_head_walkers(self, walk: Walk, word: Value, chunk: Value) -> list:
        """Return the loads of walkers 1, 2, ...: each its head's channels of ``word``.

        Walker ``j`` of ``chunk`` walks head ``chunk * parallel_heads + j``, in the KV and
        Q·KV passes only (nothing in the others, and past the last head).
        """
        geometry = self._plan.geometry
        head_dim, slots = geometry.head_dim, geometry.parallel_heads
        in_heads = self.descriptor.walk_mask != WalkMask.ALL
        statements = []
        for slot, walker in enumerate(walk.head_walkers, start=1):
            segments = {c: word[(start := self._head_start(h)):start + head_dim]
                        for c in range(geometry.kv_chunks)
                        if (h := c * slots + slot) < geometry.heads}
            segment = Const(0, head_dim)
            for c, value in segments.items():
                segment = Mux(chunk == c, value, segment)
            statements += [walker.load.eq(1), walker.word.eq(Mux(in_heads, segment, 0))]
        return statements
