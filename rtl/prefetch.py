"""The core's prefetch: the walk's next input word, read one word ahead of the walk.

Within a pass the walk takes a word (a step and a group: a token, a KV row, or a bit plane
of head.in's counts, for one output chunk) in the cycle its walker finishes the one before,
so the word is read the word before: the prefetch holds the word being read, finds the one
after it (the chunk's next segment, the next chunk, the next group, or the first group of
the next active step: masked steps cost no cycle), and picks the pass's source among the
spike maps, the patch banks and head.in's count planes.

Each chunk reads its group's word again (a register of the whole word would cost logic in
its width). Where a token's spikes are held as several words (segments, of
``CoreGeometry.spike_word_bits``), a chunk reads each segment in turn, or only the one of
its heads in the attention's passes; segment ``s`` of word ``w`` is at address
``s * t_max * tokens + w`` of a spike map, and a patch or a count plane is cut by a
multiplexer.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from stepvit.rtl.core_pipeline import check_plan, constants, fetched_layout, select
from stepvit.rtl.core_plan import CorePlan, Source, WalkMask


class SpikeWordPrefetch(wiring.Component):
    """Read the walk's next spike word (or patch, or count plane) one word ahead.

    Parameters
    ----------
    plan : CorePlan
        The core's plan: its geometry and pass layout.
    spike_map_widths : dict of Source to int
        Bits of a word of each spike map (as the core's memories hold them).

    Members
    -------
    descriptor : In(plan.layout())
        The pass being run (its source, value source, groups).
    step_mask : In(t_max)
        The steps the pass runs.
    head_planes : In(range(count_bits + 1))
        The bit planes of head.in's counts (the groups of the head's pass).
    bank : In(1)
        The patch bank of the image.
    head_counts : In(ArrayLayout(unsigned(count_bits), dim_word_bits))
        head.in's spikes per channel: the head's input (a core without segments).
    count_address, count_words : Out, In
        With segments (``CoreGeometry.counts_in_memory``): the read of head.in's count
        memory, a segment's channels a word, beside the spike maps'.
    first : In(1)
        A pass starts: read its first word, if it has an active step.
    found : Out(1)
        The pass has an active step.
    advance : In(1)
        The walk takes the word read: read the one after it.
    fetched : Out(fetched_layout(plan))
        The word read (``valid``: there is one), its step and group, its source word and
        its value word (the V spikes of the KV pass).
    fetch_address, fetch_enable : Out
        The read of the spike maps (a word per segment, step and token).
    patch_address : Out
        The read of the patches (a word per token).
    spike_words : In(StructLayout of the spike maps)
        The words read, by spike map (``buf0`` ... ``hidden``).
    patch_words : In(ArrayLayout(unsigned(8 * patch_len), 2))
        The words read from the two patch banks.
    """

    def __init__(self, *, plan: CorePlan, spike_map_widths: dict[Source, int]) -> None:
        self._plan = check_plan(plan)
        if not isinstance(spike_map_widths, dict) or not all(
                isinstance(width, int) and width >= 1 for width in spike_map_widths.values()):
            raise ValueError(f"spike_map_widths must map spike maps to positive widths, not "
                             f"{spike_map_widths!r}")
        self._sources = tuple(spike_map_widths)
        geometry = plan.geometry
        super().__init__({
            "descriptor": In(plan.layout()),
            "step_mask": In(geometry.t_max),
            "head_planes": In(range(geometry.count_bits + 1)),
            "bank": In(1),
            **({"count_address": Out(range(max(geometry.dim_segments, 2))),
                "count_words": In(geometry.word_bits(geometry.dim_word_bits)
                                  * geometry.count_bits)}
               if geometry.counts_in_memory else
               {"head_counts": In(data.ArrayLayout(unsigned(geometry.count_bits),
                                                   geometry.dim_word_bits))}),
            "first": In(1),
            "found": Out(1),
            "advance": In(1),
            "fetched": Out(fetched_layout(plan)),
            "fetch_address": Out(range(max(geometry.max_segments * geometry.t_max
                                           * geometry.tokens, 2))),
            "fetch_enable": Out(1),
            "patch_address": Out(range(max(geometry.t_max * geometry.tokens, 2))),
            "spike_words": In(data.StructLayout({
                source.name.lower(): unsigned(width)
                for source, width in spike_map_widths.items()})),
            "patch_words": In(data.ArrayLayout(unsigned(8 * geometry.patch_len), 2)),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the word's position, its successor, the read and the source's word."""
        m = Module()
        geometry = self._plan.geometry
        desc, fetched = self.descriptor, self.fetched
        word_base = constants([t * geometry.tokens for t in range(geometry.t_max)])
        first_found, first_active = self._next_active_step(m, None)
        following_found, following_step = self._next_active_step(m, fetched.step)
        more_parts = fetched.part + 1 < desc.segments
        more_chunks = fetched.chunk + 1 < desc.chunks
        more_groups = fetched.group + 1 < Mux(desc.count_planes, self.head_planes, desc.groups)
        same_word = more_parts | more_chunks
        successor_part = Mux(more_parts, fetched.part + 1, 0)
        successor_chunk = Mux(more_parts, fetched.chunk, Mux(more_chunks, fetched.chunk + 1, 0))
        successor_group = Mux(same_word, fetched.group, Mux(more_groups, fetched.group + 1, 0))
        successor_step = Mux(same_word | more_groups, fetched.step, following_step)
        word_address = Signal.like(self.patch_address)
        m.d.comb += [self.found.eq(first_found), self.patch_address.eq(word_address)]
        place = self._successor_place(more_parts, more_chunks)
        with m.If(self.first & first_found):
            m.d.comb += [self.fetch_enable.eq(1), word_address.eq(word_base[first_active])]
            m.d.sync += [fetched.step.eq(first_active), fetched.group.eq(0),
                         fetched.chunk.eq(0), fetched.part.eq(0), fetched.valid.eq(1),
                         *(self._held(name).eq(0) for name in place)]
        with m.If(self.advance):
            m.d.comb += [self.fetch_enable.eq(1),
                         word_address.eq(word_base[successor_step] + successor_group)]
            m.d.sync += [fetched.step.eq(successor_step), fetched.group.eq(successor_group),
                         fetched.chunk.eq(successor_chunk), fetched.part.eq(successor_part),
                         fetched.valid.eq(same_word | more_groups | following_found),
                         *(self._held(name).eq(value) for name, value in place.items())]
        if "segment_address" in place:
            m.d.comb += self.fetch_address.eq(Mux(self.advance, place["segment_address"], 0)
                                              + word_address)
        else:
            m.d.comb += self.fetch_address.eq(word_address)
        if geometry.counts_in_memory:
            m.d.comb += self.count_address.eq(Mux(self.advance, place["segment"], 0))
        self._words(m)
        return m

    def _held(self, name: str) -> Value:
        """Return the register of the fetched word's place ``name``."""
        return self._segment_address if name == "segment_address" else self.fetched[name]

    def _successor_place(self, more_parts: Value, more_chunks: Value) -> dict[str, Value]:
        """Return the next word's place in its spike word, kept by adding, not by tables.

        ``lane_base``: the first channel of the next chunk within its segment (by
        ``lanes``, or by a head group in the KV pass), for the attention's walk masks. With
        segments also ``segment``, ``channel`` (its first channel) and ``segment_address``
        (``segment * t_max * tokens``): the next part of a chunk walking every bit is the
        next segment; in the attention's passes a chunk's segment is the one of its heads,
        the next one when the chunk before ended a segment (a segment holds whole chunks
        and whole heads). A new group starts at segment 0. (A table indexed by the chunk
        would be a ROM: one more memory.)
        """
        geometry = self._plan.geometry
        desc, fetched = self.descriptor, self.fetched
        mode = desc.walk_mask
        chunk_channels = Mux(mode == WalkMask.HEAD, geometry.parallel_heads * geometry.head_dim,
                             geometry.lanes)
        segment_bits = geometry.word_bits(geometry.dim_word_bits)
        wraps = fetched.lane_base + chunk_channels == segment_bits
        place = {"lane_base": Mux(more_parts, fetched.lane_base,
                                  Mux(more_chunks & ~wraps, fetched.lane_base + chunk_channels,
                                      0))}
        if geometry.max_segments == 1:
            return place
        all_bits = mode == WalkMask.ALL
        advances = Mux(all_bits, more_parts, more_chunks & wraps)
        stays = ~all_bits & more_chunks & ~wraps
        self._segment_address = Signal(range(geometry.max_segments * geometry.t_max
                                             * geometry.tokens), name="segment_address")
        strides = {"segment": 1, "channel": geometry.spike_word_bits,
                   "segment_address": geometry.t_max * geometry.tokens}
        for name, stride in strides.items():
            now = self._held(name)
            place[name] = Mux(advances, now + stride, Mux(stays, now, 0))
        return place

    def _next_active_step(self, m: Module, after: Signal | None) -> tuple[Signal, Signal]:
        """Return (found, step): the first active step of the pass after ``after``."""
        t_max = self._plan.geometry.t_max
        found, step = Signal(), Signal(range(max(t_max, 2)))
        for candidate in reversed(range(t_max)):
            later = Const(1) if after is None else (after < candidate)
            with m.If(self.step_mask[candidate] & later):
                m.d.comb += [found.eq(1), step.eq(candidate)]
        return found, step

    def _words(self, m: Module) -> None:
        """Drive the fetched source and value words from the pass's sources."""
        geometry = self._plan.geometry
        desc, fetched = self.descriptor, self.fetched
        plane = self.patch_address[:max(1, (geometry.count_bits - 1).bit_length())]
        if geometry.counts_in_memory:
            # the segment's counts arrive a cycle late, as the spike maps: then its plane
            bits = geometry.count_bits
            held_plane = Signal.like(plane, name="count_plane_index")
            with m.If(self.fetch_enable):
                m.d.sync += held_plane.eq(plane)
            count_plane = Cat(*(self.count_words[c * bits:(c + 1) * bits].bit_select(
                held_plane, 1) for c in range(len(self.count_words) // bits)))
        else:
            count_plane = Signal(geometry.dim_word_bits)  # read a cycle late, as the memories
            with m.If(self.fetch_enable):
                m.d.sync += count_plane.eq(Cat(*(
                    self.head_counts[c].bit_select(plane, 1)
                    for c in range(geometry.dim_word_bits))))
        with m.Switch(desc.source):
            with m.Case(Source.PATCH):
                m.d.comb += fetched.source.eq(self._segment_of(
                    m, Mux(self.bank, self.patch_words[1], self.patch_words[0])))
            with m.Case(Source.COUNTS):
                m.d.comb += fetched.source.eq(self._segment_of(m, count_plane))
            for source in self._sources:
                with m.Case(source):
                    m.d.comb += fetched.source.eq(self.spike_words[source.name.lower()])
        with m.Switch(desc.value_source):
            for source in self._sources:
                if source != Source.HIDDEN:
                    with m.Case(source):
                        m.d.comb += fetched.value.eq(self.spike_words[source.name.lower()])

    def _segment_of(self, m: Module, word: Value) -> Value:
        """Return the fetched segment of ``word`` (a patch, a count plane: held whole)."""
        bits = self._plan.geometry.word_bits(len(word))
        if bits == len(word):
            return word
        return select(m, [word[start:start + bits] for start in range(0, len(word), bits)],
                      self.fetched.segment)
