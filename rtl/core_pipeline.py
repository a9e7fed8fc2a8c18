"""What the stages of the compute core share: the run, the walk, the fetched word, the events.

The event layout (and the parts of it each later stage keeps), the records of the signals
the walk's methods in :class:`~stepvit.rtl.core.StepvitCore` drive and read, and the small
helpers every stage uses to unpack and pack a word of lanes.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Signal, Value
from amaranth.lib import data

from stepvit.rtl.core_plan import CoreGeometry, CorePlan
from stepvit.rtl.spike_walker import SpikeWalker

#: Event fields the sum stage keeps from a chunk's last event.
SUM_FIELDS = ("chunk", "group_index", "first_step", "stream_zero", "word_address",
              "stream_address", "theta_address")
#: Event fields the fire stage keeps from the sum stage.
FIRE_FIELDS = ("chunk", "group_index", "first_step", "word_address", "stream_address")


def select(m: Module, words: list[Value], index: Value) -> Signal:
    """Return ``words[index]`` as a multiplexer (a dynamic ``word_select`` is a ``$mul``)."""
    selected = Signal(max(len(word) for word in words))
    with m.Switch(index):
        for position, word in enumerate(words):
            with m.Case(position):
                m.d.comb += selected.eq(word)
    return selected


def lanes_of(word: Value, lanes: int, bits: int, *, is_signed: bool) -> list[Value]:
    """Return the ``lanes`` fields of ``bits`` bits of a packed word, lane 0 lowest."""
    fields = [word[lane * bits:(lane + 1) * bits] for lane in range(lanes)]
    return [field.as_signed() for field in fields] if is_signed else fields


def lanes_word(values: list[Value], width: int) -> Value:
    """Return ``values`` packed ``width`` bits each, lane 0 lowest."""
    return Cat(*(value.as_unsigned()[:width] for value in values))


def constants(values: list[int]) -> Array:
    """Return ``values`` as an array of constants, indexed by a multiplexer."""
    return Array(Const(v, max(max(values), 1).bit_length()) for v in values)


def current_bits(geometry: CoreGeometry) -> int:
    """Return the signed width of a finished sum with its bias and operand."""
    return max(geometry.sum_bits, geometry.bias_bits, geometry.bits["stream"],
               geometry.bits["embed_current"]) + 2


def check_plan(plan: object) -> CorePlan:
    """Return ``plan``, or raise a one-line error when it is not a :class:`CorePlan`."""
    if not isinstance(plan, CorePlan):
        raise TypeError(f"plan must be a CorePlan, not {type(plan).__name__}")
    return plan


def chunk_shape(plan: CorePlan) -> range:
    """Return the range of a chunk index (an output chunk, or a head in the KV passes)."""
    geometry = plan.geometry
    return range(max(geometry.dim_chunks, geometry.mlp_chunks, geometry.class_chunks,
                     geometry.heads, 2))


def event_layout(plan: CorePlan) -> data.StructLayout:
    """Return the layout of one event, as the walk stage hands it to the accumulate stage.

    Members
    -------
    valid, first, last : 1
        An event; it starts a chunk's sum; it closes the chunk.
    has_weight : parallel_heads
        Bit ``j``: walker ``j`` carries a spike (an empty chunk's single event only closes
        it). Only walker 0 walks outside the attention's KV and Q·KV passes.
    plane : 3 or more
        The bit plane of the spike (the embedding's pixels, or the head's counts).
    chunk, group_index : range
        The output chunk (a head in the KV pass) and the group's running index.
    head : range
        The head of the walked bit (the Q·KV pass adds its KV row to that head's lanes).
    first_step, stream_zero : 1
        The step is the pass's first; the stream of the step is all zero.
    word_address, stream_address, bias_address, theta_address : range
        Addresses of the spike-map word, the stream chunk, the bias and the thresholds.
    kv_address : parallel_heads x range
        Per walker, its KV row in its own KV memory.
    value_segment : parallel_heads x head_dim
        Per walker, the V segment of the token in its head (the KV pass).
    kv_fresh : parallel_heads
        Per walker, its KV row has not been added to since its block's KV pass began: it
        reads as zero (so no pass clears the KV memories).
    """
    geometry = plan.geometry
    t_max, tokens, dim = geometry.t_max, geometry.tokens, geometry.dim
    chunk = chunk_shape(plan)
    slots = geometry.parallel_heads
    return data.StructLayout({
        "valid": 1, "first": 1, "last": 1, "has_weight": slots,
        "plane": max(3, (geometry.count_bits - 1).bit_length()),
        "chunk": chunk, "head": range(max(geometry.heads, 2)),
        "group_index": range(max(tokens * max(geometry.dim_chunks, geometry.class_chunks),
                                 dim, 2)),
        "first_step": 1, "stream_zero": 1,
        "word_address": range(max(t_max * tokens, 2)),
        "stream_address": range(max(t_max * tokens * geometry.dim_chunks, 2)),
        "kv_address": data.ArrayLayout(range(max(t_max * geometry.kv_rows, 2)), slots),
        "bias_address": range(max(len(plan.bias_words), 2)),
        "theta_address": range(max(len(plan.theta_words), 2)),
        "value_segment": data.ArrayLayout(geometry.head_dim, slots),
        "kv_fresh": slots,
    })


def fetched_layout(plan: CorePlan) -> data.StructLayout:
    """Return the layout of the word the prefetch hands the walk.

    Members
    -------
    valid : 1
        There is a word (the pass has words left).
    step, group : range
        Its step and group (a token, an input channel of the KV pass, a count plane).
    chunk, part : range
        The output chunk it is walked for (each chunk walks the group's word again), and
        which of the chunk's segments it is (0 to the pass's ``segments`` less one).
    segment, channel : range
        The segment of the spike word it holds (``part``, or the one of the chunk's heads
        in the attention's passes), and the segment's first channel.
    lane_base : range
        The chunk's first channel within the segment (the attention's walk masks).
    source, value : walker_bits, word bits of dim
        The word of the pass's source, and of its value source (the KV pass's V spikes).
    """
    geometry = plan.geometry
    segments = range(max(geometry.max_segments, 2))
    return data.StructLayout({
        "valid": 1,
        "step": range(max(geometry.t_max, 2)),
        "group": range(max(geometry.tokens, geometry.dim, geometry.count_bits, 2)),
        "chunk": chunk_shape(plan),
        "part": segments,
        "segment": segments,
        "channel": range(max(geometry.walk_bits, 2)),
        "lane_base": range(geometry.word_bits(geometry.dim_word_bits) + 1),
        "source": geometry.walker_bits,
        "value": geometry.word_bits(geometry.dim_word_bits),
    })


def fields_of(layout: data.StructLayout, names: tuple[str, ...]) -> data.StructLayout:
    """Return the part of ``layout`` with the fields ``names``."""
    return data.StructLayout({name: layout[name].shape for name in names})


@dataclass(frozen=True)
class RunState:
    """One run (one image): what the control FSM sets and every stage reads.

    Attributes
    ----------
    masks : Signal
        The step masks, latched at ``start``.
    descriptor : View of CorePlan.layout()
        The pass being run.
    pass_index : Signal
        Its index in the pass list.
    step_mask : Signal
        The steps the pass runs.
    logits : list of Value
        ``class_chunks * lanes`` logits (the sum stage's); the first ``num_classes`` are the
        outputs.
    begin : Signal
        Pulse: a run starts; the sum stage presets the logits, the fire stage clears the
        counts.
    bank : Signal
        The patch bank the image was loaded into (latched at ``start``).
    head_planes : Signal
        The bit planes the head's counts can have under the run's masks.
    """

    masks: Signal
    descriptor: data.View
    pass_index: Signal
    step_mask: Signal
    logits: list[Value]
    begin: Signal
    bank: Signal
    head_planes: Signal


@dataclass(frozen=True)
class Walk:
    """Where the walk stage stands: the word being walked and the chunk it feeds.

    Attributes
    ----------
    walker : SpikeWalker
        Walks the set bits of the word, one a cycle.
    head_walkers : tuple of SpikeWalker
        Walkers 1 to ``parallel_heads - 1``: in the KV and Q·KV passes, walker ``j`` walks
        the segment of head ``chunk * parallel_heads + j`` (``head_dim`` bits) beside
        walker 0, which walks head ``chunk * parallel_heads``; empty in the other passes.
    step, group : Signal
        The word (a step and a token, or an input channel of the KV pass).
    chunk : Signal
        The output chunk (a head in the KV pass).
    part : Signal
        Which of the chunk's segments is walked (the pass's ``segments`` a chunk).
    channel_base : Value
        The input channel of the walked segment's bit 0 (0 in a core whose words are
        whole).
    group_index : Signal
        A running index of (group, chunk) within the step: the address of per-token data.
    weight_row : Signal
        The first weight word of the chunk.
    first_event, first_step : Signal
        The next event starts the chunk's sum; the step is the pass's first.
    value_word : Signal
        The V word of the word being walked (the KV pass).
    running, emit : Signal
        The FSM is walking; an event leaves the walk stage this cycle.
    group_end : Value
        This cycle's event ends the walked word (a segment): every walker is at its last
        bit or has none. It closes the chunk at the chunk's last segment.
    """

    walker: SpikeWalker
    head_walkers: tuple[SpikeWalker, ...]
    step: Signal
    group: Signal
    chunk: Signal
    part: Signal
    channel_base: Value
    group_index: Signal
    weight_row: Signal
    first_event: Signal
    first_step: Signal
    value_word: Signal
    running: Signal
    emit: Signal
    group_end: Value
