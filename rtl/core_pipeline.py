"""What the stages of the compute core share: the run, the walk, the prefetch and the events.

:class:`~stepvit.rtl.core.StepvitCore` builds each stage in a method of its own; these
records carry the signals one stage drives and another reads, so that no stage reaches
into another's locals.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Signal, Value
from amaranth.lib import data

from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.spike_walker import SpikeWalker

#: Event fields the sum stage keeps from a chunk's last event.
SUM_FIELDS = ("chunk", "group_index", "first_step", "stream_zero", "word_address",
              "stream_address", "theta_address")
#: Event fields the fire stage keeps from the sum stage.
FIRE_FIELDS = ("chunk", "group_index", "first_step", "word_address", "stream_address")


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
    stream_zero : Signal
        Bit ``t``: the residual stream of step ``t`` is all zero (the embedding is masked).
    logits : list of Signal
        ``class_chunks * lanes`` logits; the first ``num_classes`` are the outputs.
    counts : list of Signal
        Spikes per LIF layer.
    bank : Signal
        The patch bank the image was loaded into (latched at ``start``).
    kv_restart : Signal
        Pulse: a KV pass begins; every KV row reads as zero again.
    head_counts : list of Signal
        head.in's spikes per channel so far (``dim_word_bits`` of ``count_bits``).
    head_planes : Signal
        The bit planes the head's counts can have under the run's masks.
    """

    masks: Signal
    descriptor: data.View
    pass_index: Signal
    step_mask: Signal
    stream_zero: Signal
    logits: list[Signal]
    counts: list[Signal]
    bank: Signal
    kv_restart: Signal
    head_counts: list[Signal]
    head_planes: Signal


@dataclass(frozen=True)
class Prefetch:
    """The spike word read one word ahead of the walk, and the word after it.

    Attributes
    ----------
    step, group : Signal
        The word being fetched.
    valid : Signal
        There is one (the pass has words left).
    address, enable : Signal
        The read of the spike maps and the patches (driven by the control FSM).
    source_data, value_data : Signal
        The fetched word of the pass's source and of its value source (KV pass).
    first_found, first_active : Signal
        The pass has an active step; the first one.
    successor_valid, successor_step, successor_group : Value
        The word after the fetched one.
    """

    step: Signal
    group: Signal
    valid: Signal
    address: Signal
    enable: Signal
    source_data: Signal
    value_data: Signal
    first_found: Signal
    first_active: Signal
    successor_valid: Value
    successor_step: Value
    successor_group: Value


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
    first_channel : Signal
        The output channel of the chunk's lane 0 (``chunk * lanes``, kept by adding).
    group_index : Signal
        A running index of (group, chunk) within the step: the address of per-token data.
    weight_row : Signal
        The first weight word of the chunk.
    first_event, first_step : Signal
        The next event starts the chunk's sum; the step is the pass's first.
    held_word, value_word : Signal
        The word being walked (again for each chunk) and its V word.
    running, emit : Signal
        The FSM is walking; an event leaves the walk stage this cycle.
    group_end : Value
        This cycle's event closes the chunk: every walker is at its last bit or has none.
    """

    walker: SpikeWalker
    head_walkers: tuple[SpikeWalker, ...]
    step: Signal
    group: Signal
    chunk: Signal
    first_channel: Signal
    group_index: Signal
    weight_row: Signal
    first_event: Signal
    first_step: Signal
    held_word: Signal
    value_word: Signal
    running: Signal
    emit: Signal
    group_end: Value


@dataclass(frozen=True)
class ClosedChunk:
    """A finished chunk, handed from one stage to the next.

    Attributes
    ----------
    valid : Signal
        A chunk arrives this cycle.
    event : View of fields_of(event_layout(...))
        The fields of its last event that the stage needs.
    values : indexable by lane
        Its sums (to the sum stage) or its input currents (to the fire stage).
    """

    valid: Signal
    event: data.View
    values: object
