"""The compute core's memories and the ports its pipeline stages use.

All are ``lib.memory.Memory``: weights, biases, thresholds and the stream's spike values
(ROMs from the export; RAMs the weight loader fills in a ``weights="ddr"`` design); the
patches of the image; five spike maps (``[T·N]`` words); the embedding current
(``[N, D]``); one layer's membranes (``[N, D]``); the residual stream for every step
(``[T, N, D]``); the KV tables of every step, one memory per head walked side by side in
the attention (``parallel_heads``), so that each head's walker reads and writes its own KV
row in the same cycle.
:meth:`~stepvit.rtl.core_plan.CorePlan.memory_bits` sums them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from amaranth.hdl import Module, unsigned
from amaranth.lib.memory import Memory, ReadPort, WritePort

from stepvit.rtl.core_plan import SPIKE_BUFFERS, CorePlan, Source
from stepvit.rtl.ram_style import ram_attrs


@dataclass(frozen=True)
class CoreMemories:
    """The ports of the core's memories, named by what they hold.

    Attributes
    ----------
    weight_read, bias_read, theta_read, spike_value_read : ReadPort
        The ROMs: weight words, biases, thresholds, the stream value of a spike
        (``weight_read`` is ``None`` in a core that streams its weights: its tiles are a
        :class:`~stepvit.rtl.tile_buffer.TileBuffer`).
    patch_write, patch_read : tuple of WritePort, tuple of ReadPort
        The image as patch bit planes, one word per token, in two banks (two memories):
        the next image loads into one while the current one computes from the other (no
        bank with a convolutional stem).
    buffer_write, buffer_read : dict of Source to WritePort, ReadPort
        The spike maps, one word per step and token (or per segment, step and token: see
        ``CoreGeometry.spike_word_bits``); written a chunk (``lanes`` bits) at a time.
    buffer_widths : dict of Source to int
        Bits of one spike-map word (the MLP width for the hidden layer, else the model width,
        padded to whole chunks; at most ``spike_word_bits``).
    current_write, current_read : WritePort, ReadPort
        The embedding current.
    membrane_write, membrane_read : WritePort, ReadPort
        One layer's membranes; the read is transparent.
    stream_writes, stream_reads : tuple of WritePort, tuple of ReadPort
        The residual stream of every step; the reads are transparent. Two buffers with a
        step-major convolutional stem (the stem writes one image's while the blocks update
        another's), one otherwise (``CoreGeometry.stream_buffers``).
    kv_write, kv_read : tuple of WritePort, tuple of ReadPort
        The KV tables of every step, one memory per walker slot ``j`` of the parallel heads:
        it holds the rows of heads ``j``, ``j + parallel_heads``, ... (``kv_rows`` a step);
        the reads are transparent.
    count_write, count_reads : WritePort or None, tuple of ReadPort
        With segments only (``CoreGeometry.counts_in_memory``): head.in's spike counts per
        channel, a segment's channels a word, written a chunk at a time; read by the fire
        stage (transparent: its read-modify-write) and by the prefetch (the head's count
        planes).
    parameter_writes : dict of str to WritePort, optional
        ``writable=True`` only: the write ports of the four parameter memories (RAMs with no
        initial contents), by their weight-image names (``rtl/design_image.py``).
    """

    weight_read: ReadPort | None
    bias_read: ReadPort
    theta_read: ReadPort
    spike_value_read: ReadPort
    patch_write: tuple[WritePort, ...]
    patch_read: tuple[ReadPort, ...]
    buffer_write: dict[Source, WritePort]
    buffer_read: dict[Source, ReadPort]
    buffer_widths: dict[Source, int]
    current_write: WritePort
    current_read: ReadPort
    membrane_write: WritePort
    membrane_read: ReadPort
    stream_writes: tuple[WritePort, ...]
    stream_reads: tuple[ReadPort, ...]
    kv_write: tuple[WritePort, ...]
    kv_read: tuple[ReadPort, ...]
    count_write: WritePort | None = None
    count_reads: tuple[ReadPort, ...] = ()
    parameter_writes: dict[str, WritePort] | None = None


def add_core_memories(m: Module, plan: CorePlan, *, writable: bool = False,
                      streamed: bool = False, stream_ddr: bool = False,
                      ram_styles: Mapping[str, str] | None = None) -> CoreMemories:
    """Add the memories of ``plan`` to ``m`` as submodules and return their ports.

    With ``writable`` the weights, biases, thresholds and spike values are RAMs with no
    initial contents and a write port each (``weights="ddr"``: the weight loader fills
    them); otherwise ROMs initialised from the plan. With ``streamed`` (and ``writable``)
    there is no weight memory: the core streams its weights through a tile buffer. With
    ``stream_ddr`` there is no stream memory (``stream_reads`` and ``stream_writes`` are
    empty): the stream is in DDR (:class:`~stepvit.rtl.stream_ddr.StreamDdr`).
    ``ram_styles``: the memories marked ``ram_style`` ``"ultra"`` or ``"distributed"``
    (:mod:`stepvit.rtl.ram_style`, by the names here, which are
    :func:`stepvit.rtl.sizing.memory_shapes`'s).
    """
    geometry = plan.geometry
    lanes, bits = geometry.lanes, geometry.bits
    t_max, tokens = geometry.t_max, geometry.tokens

    def memory(name: str, width: int, depth: int, init: list[int] | None = None) -> Memory:
        mem = Memory(shape=unsigned(width), depth=max(depth, 2), init=init or [],
                     attrs=ram_attrs(ram_styles, name))
        m.submodules[name] = mem
        return mem

    def init(words: list[int]) -> list[int] | None:
        return None if writable else words

    weight_rom = (None if streamed else
                  memory("weights", 8 * lanes, len(plan.weight_words), init(plan.weight_words)))
    bias_rom = memory("biases", geometry.bias_bits * lanes, len(plan.bias_words),
                      init(plan.bias_words))
    theta_rom = memory("thresholds", bits["membrane"] * lanes, len(plan.theta_words),
                       init(plan.theta_words))
    spike_value_rom = memory("stream_spike", bits["stream"] * lanes, geometry.dim_chunks,
                             init(plan.stream_spike_words))
    parameter_writes = ({name: mem.write_port() for name, mem in (
        ("weights", weight_rom), ("biases", bias_rom), ("thresholds", theta_rom),
        ("stream_spike", spike_value_rom)) if mem is not None} if writable else None)
    # two banks, two memories: each as shallow as the tokens (distributed RAM up to 64)
    # (none with a convolutional stem: the stem engine keeps the pixels)
    patch_mems = [memory(f"patches{bank}", 8 * geometry.patch_len, tokens)
                  for bank in (0, 1) if geometry.patch_len]
    # a token's spikes as one word, or as segments (segment-major: s * T * N + word)
    map_bits = {source: (geometry.mlp_word_bits if source == Source.HIDDEN
                         else geometry.dim_word_bits) for source in SPIKE_BUFFERS}
    buffer_widths = {source: geometry.word_bits(bits) for source, bits in map_bits.items()}
    buffers = {source: memory(f"spikes_{source.name.lower()}", buffer_widths[source],
                              geometry.segments(bits) * t_max * tokens)
               for source, bits in map_bits.items()}
    current_mem = memory("embed_current", bits["embed_current"] * lanes,
                         0 if geometry.stem_modules else tokens * geometry.dim_chunks)
    membrane_mem = memory("membranes", bits["membrane"] * lanes, tokens * geometry.dim_chunks)
    # two buffers with a step-major stem: it writes the next image's while the blocks update
    # this one's (one with a chunk-major stem: its tokens wait for the blocks)
    stream_mems = [memory(f"stream{buffer}" if geometry.stream_buffers == 2 else "stream",
                          bits["stream"] * lanes, t_max * tokens * geometry.dim_chunks)
                   for buffer in range(0 if stream_ddr else geometry.stream_buffers)]
    kv_mems = [memory(f"kv{slot}", bits["attention"] * geometry.head_dim,
                      t_max * geometry.kv_rows) for slot in range(geometry.parallel_heads)]

    count_write, count_reads = None, ()
    if geometry.counts_in_memory:
        counts = memory("head_counts", geometry.word_bits(geometry.dim_word_bits)
                        * geometry.count_bits, geometry.dim_segments)
        count_write = counts.write_port(granularity=lanes * geometry.count_bits)
        count_reads = (counts.read_port(transparent_for=(count_write,)), counts.read_port())
    membrane_write = membrane_mem.write_port()
    stream_writes = tuple(mem.write_port() for mem in stream_mems)
    kv_write = tuple(mem.write_port() for mem in kv_mems)
    return CoreMemories(
        weight_read=None if weight_rom is None else weight_rom.read_port(),
        bias_read=bias_rom.read_port(),
        theta_read=theta_rom.read_port(),
        spike_value_read=spike_value_rom.read_port(),
        patch_write=tuple(mem.write_port(granularity=8) for mem in patch_mems),
        patch_read=tuple(mem.read_port() for mem in patch_mems),
        buffer_write={s: mem.write_port(granularity=lanes) for s, mem in buffers.items()},
        buffer_read={s: mem.read_port() for s, mem in buffers.items()},
        buffer_widths=buffer_widths,
        current_write=current_mem.write_port(),
        current_read=current_mem.read_port(),
        membrane_write=membrane_write,
        membrane_read=membrane_mem.read_port(transparent_for=(membrane_write,)),
        stream_writes=stream_writes,
        stream_reads=tuple(mem.read_port(transparent_for=(write,))
                           for mem, write in zip(stream_mems, stream_writes)),
        kv_write=kv_write,
        kv_read=tuple(mem.read_port(transparent_for=(write,))
                      for mem, write in zip(kv_mems, kv_write)),
        count_write=count_write,
        count_reads=count_reads,
        parameter_writes=parameter_writes,
    )
