"""The core's schedule and memory images, worked out in Python at generation time.

The network's shape is known when the accelerator is generated, so the schedule is a short
list of *passes* (one per layer and per attention stage) that the sequencer in
``rtl/core.py`` steps through; each pass is a row of constants (:data:`pass_layout`).

A pass runs layer-major, time-minor: for every active step ``t`` of its module (in order),
for every group ``n`` (a token, or a KV row), for every chunk ``c`` of ``lanes`` output
channels, it walks the set bits of the group's input spike word (restricted to one head's
segment in the attention passes, or several heads' segments side by side: see
:attr:`CoreGeometry.parallel_heads`) and sends the finished chunk to its sink. A layer's LIF
at step ``t`` depends only on its inputs at steps up to ``t``, so this order gives the
golden model's time-major results while keeping one layer's membranes at a time.

Memory images (weights, biases, thresholds, spike values of the stream) are packed here,
one word per chunk of ``lanes`` channels, lane 0 in the low bits. ``lanes`` need not divide
any width: a layer's last chunk is ragged (its lanes past the layer's width get zero
weights and biases, never fire and are not counted), and a chunk may span several heads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from amaranth.hdl import unsigned
from amaranth.lib import data, enum

from stepvit.model.export import Export


class Source(enum.Enum, shape=3):
    """Where a pass's input spike words come from."""

    NONE = 0
    PATCH = 1  # the bit planes of one patch (8 bits a pixel): the embedding's input
    BUF0 = 2
    BUF1 = 3
    BUF2 = 4
    BUF3 = 5
    HIDDEN = 6  # the MLP's hidden layer, mlp_dim bits a word
    COUNTS = 7  # bit plane b of the head.in spike counts per channel (the head's input)


class WeightSource(enum.Enum, shape=2):
    """What one walked spike selects and adds."""

    NONE = 0
    ROM = 1  # a weight word of the layer
    KV = 2  # a chunk of a KV row (the attention's Q·KV)


class Operand(enum.Enum, shape=2):
    """The memory word added to a finished chunk besides its bias."""

    NONE = 0
    CURRENT = 1  # the embedding current of the token
    STREAM = 2  # the residual stream at this step


class WalkMask(enum.Enum, shape=2):
    """Which bits of the input spike word a chunk walks."""

    ALL = 0
    HEAD = 1  # the chunk is a head (or parallel_heads of them): its segments (the KV pass)
    CHUNK_HEADS = 2  # the segments of the heads the chunk's channels belong to (Q·KV)


class Sink(enum.Enum, shape=3):
    """What happens to a finished chunk."""

    LIF = 0  # charge, fire, reset; write spikes
    STORE_CURRENT = 1  # the embedding current
    STORE_STREAM = 2  # a residual add: the stream gets operand + sum + bias
    # 3 was KV_CLEAR: a KV row now reads as zero until its first add (``kv_fresh``)
    KV_ADD = 4  # (per event, not per chunk) KV row += the token's V segment
    LOGITS = 5  # logits of the chunk += sum


#: The buffers that hold a spike map for every step and token.
SPIKE_BUFFERS = (Source.BUF0, Source.BUF1, Source.BUF2, Source.BUF3, Source.HIDDEN)


@dataclass(frozen=True)
class CoreGeometry:
    """The shapes, widths and depths of one core.

    Built by :meth:`from_export`, which refuses a lane count the core cannot use.
    """

    lanes: int
    tokens: int
    dim: int
    heads: int
    head_dim: int
    mlp_dim: int
    depth: int
    num_classes: int
    t_max: int
    patch_len: int
    image_shape: tuple[int, int, int]
    patch: int
    bits: dict[str, int]
    leak_shift: int
    reset: str
    stem_modules: int = 0
    spike_word_bits: int | None = None
    stream_buffers: int = 1

    @classmethod
    def from_export(cls, export: Export, *, lanes: int,
                    spike_word_bits: int | None = None,
                    stem_chunk_major: bool = False) -> CoreGeometry:
        """Return the geometry of ``export`` with ``lanes`` accumulator lanes.

        ``spike_word_bits``: the widest word of a spike map (and of the walk); a token's
        spikes wider than that are held as several words, its *segments*
        (:attr:`word_bits`). ``None`` (default): one word a token.

        ``stem_chunk_major``: the export's stem runs chunk-major, its tokens passes last,
        so the core keeps one buffer of the residual stream (the stem's tokens wait for the
        blocks: :class:`~stepvit.rtl.stem_front.StemFront`); a step-major stem writes the
        next image's stream into a second buffer (:attr:`stream_buffers`).

        Raises
        ------
        ValueError
            If ``lanes`` is not a positive integer at most the widest output row, or
            ``spike_word_bits`` cannot cut the spike words (:meth:`_checked`).
        """
        arch = export.arch
        # with a convolutional stem the stem engine makes the tokens: no patch embedding
        stem_modules = export.stem_modules
        patch = 0 if stem_modules else int(arch["patch"])
        head_dim = arch["dim"] // arch["heads"]
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        widest = max(arch["dim"], arch["mlp_dim"], arch["num_classes"])
        if lanes > widest:
            raise ValueError(f"lanes ({lanes}) must be at most the widest output row ({widest})")
        channels, height, width = (int(v) for v in arch["image_shape"])
        neuron = export.neuron
        return cls(
            lanes=lanes,
            tokens=int(arch["tokens"]),
            dim=int(arch["dim"]),
            heads=int(arch["heads"]),
            head_dim=head_dim,
            mlp_dim=int(arch["mlp_dim"]),
            depth=int(arch["depth"]),
            num_classes=int(arch["num_classes"]),
            t_max=export.t_max,
            patch_len=channels * patch ** 2,
            image_shape=(channels, height, width),
            patch=patch,
            bits=export.bit_widths,
            leak_shift=int(neuron["leak_shift"]),
            reset=str(neuron["reset"]),
            stem_modules=stem_modules,
            stream_buffers=2 if stem_modules and not stem_chunk_major else 1,
        )._checked(spike_word_bits)

    def _checked(self, spike_word_bits: int | None) -> CoreGeometry:
        """Return this geometry with ``spike_word_bits``, or raise why it cannot have them.

        A segment holds whole chunks (the fire stage writes a chunk into one word), whole
        heads where a ``dim`` word is cut (the attention walks one segment for a chunk's
        heads), and whole pixels where a patch is cut (a walked bit's pixel is its index
        over 8).
        """
        if spike_word_bits is None:
            return self
        if (not isinstance(spike_word_bits, int) or isinstance(spike_word_bits, bool)
                or spike_word_bits < 1):
            raise ValueError(f"spike_word_bits must be a positive integer, "
                             f"not {spike_word_bits!r}")
        needs = [("the lanes", self.lanes)]
        if spike_word_bits < self.dim_word_bits:
            needs.append(("the channels of a head", self.head_dim))
        if spike_word_bits < 8 * self.patch_len:
            needs.append(("the 8 bit planes of a pixel", 8))
        for what, unit in needs:
            if spike_word_bits % unit:
                raise ValueError(f"spike_word_bits ({spike_word_bits}) must be a multiple "
                                 f"of {what} ({unit})")
        return dataclasses.replace(self, spike_word_bits=spike_word_bits)

    @property
    def first_block_module(self) -> int:
        """Mask row of block 0's attention: after the embedding, or the stem's modules."""
        return self.stem_modules or 1

    @property
    def modules(self) -> int:
        """Mask rows: the embedding (or the stem's modules), two per block, the head."""
        return self.first_block_module + 2 * self.depth + 1

    @property
    def dim_chunks(self) -> int:
        """Chunks of ``lanes`` channels in ``dim`` (the last one ragged)."""
        return -(-self.dim // self.lanes)

    @property
    def mlp_chunks(self) -> int:
        """Chunks of ``lanes`` channels in ``mlp_dim`` (the last one ragged)."""
        return -(-self.mlp_dim // self.lanes)

    @property
    def parallel_heads(self) -> int:
        """Heads the attention's KV and Q·KV passes walk side by side (1: one at a time).

        Each head of a group has its own walker, KV memory and ``head_dim`` lanes, so the
        group's heads must sit whole in one chunk at the same lanes in both passes: at
        least two heads fit in the lanes, and the lanes are whole heads (or one chunk
        holds every head).
        """
        fitting = min(self.lanes // self.head_dim, self.heads)
        aligned = self.lanes % self.head_dim == 0 or self.lanes >= self.dim
        return fitting if fitting >= 2 and aligned else 1

    @property
    def kv_chunks(self) -> int:
        """Chunks of the KV pass: groups of ``parallel_heads`` heads (the last one ragged)."""
        return -(-self.heads // self.parallel_heads)

    @property
    def kv_rows(self) -> int:
        """Rows of one KV memory per step: the channels of the heads at one walker's slot."""
        return self.kv_chunks * self.head_dim

    @property
    def dim_word_bits(self) -> int:
        """Bits of a spike word of ``dim`` channels, padded to whole chunks."""
        return self.dim_chunks * self.lanes

    @property
    def mlp_word_bits(self) -> int:
        """Bits of a spike word of the MLP's hidden layer, padded to whole chunks."""
        return self.mlp_chunks * self.lanes

    @property
    def class_chunks(self) -> int:
        """Chunks of ``lanes`` logits (the last one padded with zero weights)."""
        return -(-self.num_classes // self.lanes)

    @property
    def walk_bits(self) -> int:
        """Widest spike word a pass walks."""
        return max(self.dim_word_bits, self.mlp_word_bits, 8 * self.patch_len)

    def word_bits(self, bits: int) -> int:
        """Return the bits of one word (segment) of a spike word of ``bits`` bits."""
        return bits if self.spike_word_bits is None else min(bits, self.spike_word_bits)

    def segments(self, bits: int) -> int:
        """Return the words (segments) a spike word of ``bits`` bits is held as."""
        return -(-bits // self.word_bits(bits))

    @property
    def walker_bits(self) -> int:
        """Bits of the widest word the walk takes: the widest spike word, or a segment."""
        return self.word_bits(self.walk_bits)

    @property
    def dim_segments(self) -> int:
        """Segments of a spike word of ``dim`` channels (the four spike maps, the counts)."""
        return self.segments(self.dim_word_bits)

    @property
    def mlp_segments(self) -> int:
        """Segments of a spike word of the MLP's hidden layer."""
        return self.segments(self.mlp_word_bits)

    @property
    def patch_segments(self) -> int:
        """Segments of a patch's bit planes (0 with a stem: no patch)."""
        return self.segments(8 * self.patch_len) if self.patch_len else 0

    @property
    def max_segments(self) -> int:
        """The most segments of any word a pass walks."""
        return max(self.dim_segments, self.mlp_segments, self.patch_segments)

    def segment_of_chunk(self, chunk: int) -> tuple[int, int]:
        """Return (segment, chunk within it) of output chunk ``chunk`` in a spike map.

        A segment holds ``spike_word_bits // lanes`` chunks (every chunk in one word when
        there is no limit).
        """
        if self.spike_word_bits is None:
            return 0, chunk
        per_segment = self.spike_word_bits // self.lanes
        return divmod(chunk, per_segment)

    @property
    def counts_in_memory(self) -> bool:
        """Whether head.in's spike counts are a memory (a segment a word) or registers.

        A memory with segments; registers (one a channel) without.
        """
        return self.max_segments > 1

    @property
    def count_bits(self) -> int:
        """Bits of a channel's head.in spike count over every step and token."""
        return (self.t_max * self.tokens).bit_length()

    @property
    def bias_bits(self) -> int:
        """Signed width of a bias in the bias memory (the stem's are the stem engine's)."""
        if self.stem_modules:
            return self.bits["current"]
        return max(self.bits["current"], self.bits["embed_current"])

    @property
    def addend_bits(self) -> int:
        """Signed width of one addend: a shifted int8 weight, or a KV count.

        A weight is shifted by up to 7 pixel planes, or by the count planes of the head.
        """
        return max(15, 7 + self.count_bits, self.bits["attention"] + 1)

    @property
    def sum_bits(self) -> int:
        """Signed width of an accumulator lane (every proven bound and every addend fits)."""
        return max(self.addend_bits, *(self.bits[key] for key in
                                       ("embed_current", "current", "attention", "logit")))


def pass_layout(geometry: CoreGeometry, rom_depth: int, bias_depth: int,
                theta_depth: int, *, split: bool = False) -> data.StructLayout:
    """Return the layout of one pass descriptor of ``geometry``.

    With ``split`` (a plan whose weight passes are split into tiles: :class:`CorePlan`)
    ``chunk_offset`` also holds the first chunk of a slice of the head's logits.
    """
    modules = geometry.modules
    offset_chunks = max(geometry.mlp_chunks, geometry.class_chunks if split else 0, 2)
    most_chunks = max(geometry.dim_chunks, geometry.mlp_chunks, geometry.class_chunks,
                      geometry.heads)
    layers = geometry.first_block_module + 7 * geometry.depth + 1
    return data.StructLayout({
        "source": Source,
        "value_source": Source,
        "weights": WeightSource,
        "weight_base": unsigned(max(rom_depth, 2).bit_length()),
        "input_len": unsigned(max(geometry.walk_bits, 2).bit_length()),
        "bit_planes": unsigned(1),
        "count_planes": unsigned(1),
        "chunks": unsigned(max(most_chunks, 2).bit_length()),
        "chunk_offset": unsigned(offset_chunks.bit_length()),
        "walk_mask": WalkMask,
        "groups": unsigned(max(geometry.tokens, geometry.dim, geometry.count_bits,
                               2).bit_length()),
        "module": unsigned(max(modules, 2).bit_length()),
        "once": unsigned(1),
        "use_bias": unsigned(1),
        "bias_per_token": unsigned(1),
        "bias_base": unsigned(max(bias_depth, 2).bit_length()),
        "operand": Operand,
        "sink": Sink,
        "theta_base": unsigned(max(theta_depth, 2).bit_length()),
        "layer": unsigned(max(layers, 2).bit_length()),
        "target": Source,
        "to_stream": unsigned(1),
        "skip_empty": unsigned(1),
        "segments": unsigned(max(geometry.max_segments, 2).bit_length()),
        # with segments: the segment (its address, segment * T * N) and the chunk within it
        # of the pass's first output chunk (chunk_offset), where its spikes are written
        **({"out_segment_address": unsigned((geometry.max_segments * geometry.t_max
                                             * geometry.tokens).bit_length()),
            "out_within": unsigned(max(geometry.spike_word_bits // geometry.lanes,
                                       2).bit_length())}
           if geometry.max_segments > 1 else {}),
    })


def _pack(values: np.ndarray, bits: int) -> int:
    """Return the lanes of ``values`` packed into one word, lane 0 lowest."""
    word = 0
    for lane, value in enumerate(values.tolist()):
        word |= (int(value) & ((1 << bits) - 1)) << (lane * bits)
    return word


def _padded_rows(values: np.ndarray, lanes: int) -> np.ndarray:
    """Return ``values`` (one row, or ``[rows, width]``) as rows of ``lanes``.

    Each row is padded with zeros to whole chunks (the core masks a ragged chunk's spare
    lanes).
    """
    rows = np.atleast_2d(values.astype(np.int64))
    width = -(-rows.shape[1] // lanes) * lanes
    padded = np.zeros((rows.shape[0], width), dtype=np.int64)
    padded[:, :rows.shape[1]] = rows
    return padded.reshape(-1, lanes)


def _chunk_words(matrix: np.ndarray, lanes: int, bits: int) -> list[int]:
    """Return ``[out, in]`` as words ``(chunk, input) -> lanes of W[chunk*lanes + l, input]``."""
    out_features, in_features = matrix.shape
    padded = -(-out_features // lanes) * lanes
    full = np.zeros((padded, in_features), dtype=np.int64)
    full[:out_features] = matrix
    return [_pack(full[chunk * lanes:(chunk + 1) * lanes, index], bits)
            for chunk in range(padded // lanes) for index in range(in_features)]


class CorePlan:
    """The passes and memory images of a core for ``export`` with ``lanes`` lanes.

    Attributes
    ----------
    geometry : CoreGeometry
    passes : list of dict
        Pass descriptors (fields of :func:`pass_layout`), in execution order.
    weight_words, bias_words, theta_words, stream_spike_words : list of int
        Initial contents of the weight, bias, threshold and stream-spike memories.
    head_bias : list of int
        Initial value of the logits.
    tile_words : int or None
        The most weight words one pass may read (``None``: no limit), as given.
    split : bool
        Some weight pass is split into several (by ``tile_words``): the core then keeps the
        true chunk of each slice (``chunk_offset + chunk``) in its addresses.
    tiles : list of (int, int) or None
        One entry per pass: ``None`` for a pass that reads no weight word (LIF of the
        stream, KV, Q·KV), else ``(first_word, words)``: its ``weight_base`` and its
        ``chunks * input_len`` words, ``weight_words[first_word:first_word + words]``,
        the words the pass reads (a tile of a design that streams its weights).
    tile_depth : int
        The most words of any tile (0 when no pass reads weights).

    With ``contents=False`` the memories' words and ``head_bias`` are zeros (only their
    counts are right): the plan of a board's sizing, which needs the memories' shapes, not
    their contents, and of a ``weights="ddr"`` core, which must not depend on the values.

    With ``spike_word_bits`` (:meth:`CoreGeometry.from_export`) a token's spikes wider
    than that are held as several words (segments); each pass says how many a chunk walks
    (its ``segments``).

    With ``tile_words`` an int, every pass that reads weights (the embedding, q, k, v,
    proj, each slice of fc1, fc2, the head) is split into consecutive passes, each a
    contiguous run of its chunks as long as fits ``chunks * input_len <= tile_words``
    (at least one chunk): a slice keeps the pass's fields but its chunks, and offsets its
    ``weight_base``, ``chunk_offset`` and its threshold and (per chunk) bias bases by its
    first chunk. Per-token biases and the stream are addressed by the slice's true chunk.

    Raises
    ------
    ValueError
        If ``tile_words`` is not a positive integer or ``None``, or one chunk of a layer
        needs more weight words than ``tile_words``.
    """

    def __init__(self, export: Export, *, lanes: int, contents: bool = True,
                 tile_words: int | None = None,
                 spike_word_bits: int | None = None,
                 stem_chunk_major: bool = False) -> None:
        if tile_words is not None and (not isinstance(tile_words, int)
                                       or isinstance(tile_words, bool) or tile_words < 1):
            raise ValueError(f"tile_words must be a positive integer or None, "
                             f"not {tile_words!r}")
        self.tile_words = tile_words
        self.split = False
        self.geometry = geometry = CoreGeometry.from_export(
            export, lanes=lanes, spike_word_bits=spike_word_bits,
            stem_chunk_major=stem_chunk_major)
        self._contents = contents
        self._arrays = export.arrays
        self._thresholds = export.thresholds
        self._layers = export.layer_names()
        self.weight_words: list[int] = []
        self.bias_words: list[int] = []
        self.theta_words: list[int] = []
        self.passes: list[dict[str, Any]] = []
        self.stream_spike_words = _chunk_words(
            self._arrays["stream_spike"].astype(np.int64)[:, None], lanes,
            geometry.bits["stream"]
        )
        self.head_bias = [int(v) for v in self._arrays["head.bias"]]
        if not contents:
            self.stream_spike_words = [0] * len(self.stream_spike_words)
            self.head_bias = [0] * len(self.head_bias)
        if not geometry.stem_modules:
            self._add_embedding()
        for block in range(geometry.depth):
            self._add_attention(block)
            self._add_mlp(block)
        self._add_head()
        for descriptor in self.passes:
            self._place_segments(descriptor)

    def _add_embedding(self) -> None:
        """Append the embedding's passes: its current once, then its LIF into the stream."""
        geometry = self.geometry
        self._add_weighted("embed", source=Source.PATCH, weights=WeightSource.ROM,
                           weight_base=self._weights("embed.weight"),
                           input_len=geometry.patch_len, bit_planes=1, once=1, use_bias=1,
                           bias_per_token=1, bias_base=self._biases("embed.bias"),
                           sink=Sink.STORE_CURRENT)
        self._add(module=0, operand=Operand.CURRENT, to_stream=1, **self._theta("embed"))

    def _weights(self, key: str) -> int:
        """Append the weight words of ``key``; return the address of the first."""
        base = len(self.weight_words)
        matrix, lanes = self._arrays[key], self.geometry.lanes
        if self._contents:
            self.weight_words += _chunk_words(matrix.astype(np.int64), lanes, 8)
        else:
            self.weight_words += [0] * (-(-matrix.shape[0] // lanes) * matrix.shape[1])
        return base

    def _biases(self, key: str) -> int:
        """Append the bias words of ``key``; return the address of the first."""
        base = len(self.bias_words)
        values = _padded_rows(self._arrays[key], self.geometry.lanes)
        self.bias_words += ([_pack(row, self.geometry.bias_bits) for row in values]
                            if self._contents else [0] * len(values))
        return base

    def _theta(self, layer: str) -> dict[str, int]:
        """Append the threshold words of LIF ``layer``; return its pass's LIF fields."""
        base = len(self.theta_words)
        values = _padded_rows(self._thresholds[layer], self.geometry.lanes)
        self.theta_words += ([_pack(row, self.geometry.bits["membrane"]) for row in values]
                             if self._contents else [0] * len(values))
        return {"sink": Sink.LIF, "theta_base": base, "layer": self._layers.index(layer)}

    def _add(self, **fields: Any) -> None:
        """Append a pass: ``fields`` over the defaults (every token, the model's chunks)."""
        descriptor = {"groups": self.geometry.tokens, "chunks": self.geometry.dim_chunks}
        descriptor.update(fields)
        self.passes.append(descriptor)

    def _place_segments(self, descriptor: dict[str, Any]) -> None:
        """Give a planned pass its segment fields.

        ``segments``: every segment of the source's word in a pass that walks all its bits;
        one (the segment of the chunk's heads) in the attention's. With segments also where
        the pass's first output chunk (``chunk_offset``, a slice's) is written:
        ``out_segment_address`` (``segment * t_max * tokens``) and ``out_within``.
        """
        geometry = self.geometry
        source = descriptor.get("source", Source.NONE)
        if descriptor.get("walk_mask", WalkMask.ALL) != WalkMask.ALL or source == Source.NONE:
            segments = 1
        elif source == Source.PATCH:
            segments = geometry.patch_segments
        elif source == Source.HIDDEN:
            segments = geometry.mlp_segments
        else:
            segments = geometry.dim_segments
        descriptor["segments"] = segments
        if geometry.max_segments > 1:
            segment, within = geometry.segment_of_chunk(descriptor.get("chunk_offset", 0))
            descriptor.update(out_segment_address=segment * geometry.t_max * geometry.tokens,
                              out_within=within)

    def _add_weighted(self, name: str, /, **fields: Any) -> None:
        """Append a pass that reads weights: in slices of at most ``tile_words`` words.

        ``fields`` are the whole pass's (as for :meth:`_add`); ``name`` (the layer's) names
        it in the refusal of a chunk that needs more words than a tile holds.
        """
        descriptor = {"groups": self.geometry.tokens, "chunks": self.geometry.dim_chunks}
        descriptor.update(fields)
        chunks, input_len = descriptor["chunks"], descriptor["input_len"]
        if self.tile_words is None:
            self.passes.append(descriptor)
            return
        if input_len > self.tile_words:
            raise ValueError(f"one chunk of {name} needs {input_len} weight words, more "
                             f"than tile_words ({self.tile_words})")
        per_slice = self.tile_words // input_len
        if per_slice >= chunks:
            self.passes.append(descriptor)
            return
        self.split = True
        for first in range(0, chunks, per_slice):
            piece = dict(descriptor)
            piece.update(chunks=min(per_slice, chunks - first),
                         chunk_offset=descriptor.get("chunk_offset", 0) + first,
                         weight_base=descriptor["weight_base"] + first * input_len)
            if "theta_base" in descriptor:
                piece["theta_base"] = descriptor["theta_base"] + first
            if descriptor.get("use_bias") and not descriptor.get("bias_per_token"):
                piece["bias_base"] = descriptor["bias_base"] + first
            self.passes.append(piece)

    @property
    def tiles(self) -> list[tuple[int, int] | None]:
        """Per pass, ``(first_word, words)`` of the weights it reads, or ``None``."""
        return [(p["weight_base"], p["chunks"] * p["input_len"])
                if p.get("weights") == WeightSource.ROM else None for p in self.passes]

    @property
    def tile_depth(self) -> int:
        """The most weight words any one pass reads (0 when none reads any)."""
        return max((tile[1] for tile in self.tiles if tile is not None), default=0)

    def _add_attention(self, block: int) -> None:
        """Append the passes of block ``block``'s attention."""
        geometry, add = self.geometry, self._add
        prefix, attn = f"blocks.{block}", geometry.first_block_module + 2 * block
        add(module=attn, operand=Operand.STREAM, target=Source.BUF0,
            **self._theta(f"{prefix}.attn.in"))
        for name, target in (("q", Source.BUF1), ("k", Source.BUF2), ("v", Source.BUF3)):
            self._add_weighted(
                f"{prefix}.attn.{name}", module=attn, source=Source.BUF0, weights=WeightSource.ROM,
                weight_base=self._weights(f"{prefix}.attn.{name}.weight"),
                input_len=geometry.dim, use_bias=1,
                bias_base=self._biases(f"{prefix}.attn.{name}.bias"), target=target,
                **self._theta(f"{prefix}.attn.{name}"))
        add(module=attn, source=Source.BUF2, value_source=Source.BUF3,
            chunks=geometry.kv_chunks, walk_mask=WalkMask.HEAD, sink=Sink.KV_ADD,
            skip_empty=1)
        add(module=attn, source=Source.BUF1, weights=WeightSource.KV,
            walk_mask=WalkMask.CHUNK_HEADS, target=Source.BUF0,
            **self._theta(f"{prefix}.attn.attn"))
        self._add_weighted(
            f"{prefix}.attn.proj", module=attn, source=Source.BUF0, weights=WeightSource.ROM,
            weight_base=self._weights(f"{prefix}.attn.proj.weight"), input_len=geometry.dim,
            use_bias=1, bias_base=self._biases(f"{prefix}.attn.proj.bias"),
            operand=Operand.STREAM, sink=Sink.STORE_STREAM)

    def _add_mlp(self, block: int) -> None:
        """Append the passes of block ``block``'s MLP."""
        geometry, add = self.geometry, self._add
        prefix, mlp = f"blocks.{block}", geometry.first_block_module + 1 + 2 * block
        add(module=mlp, operand=Operand.STREAM, target=Source.BUF0,
            **self._theta(f"{prefix}.mlp.in"))
        fc1_weight = self._weights(f"{prefix}.mlp.fc1.weight")
        fc1_bias = self._biases(f"{prefix}.mlp.fc1.bias")
        fc1_lif = self._theta(f"{prefix}.mlp.fc1")
        # fc1 in slices of `dim` output channels: a LIF channel needs only its own
        # membrane, so the membranes of one slice (N·dim, not N·mlp_dim) are enough; each
        # slice walks the same input spikes, so the accumulates are the same.
        for first in range(0, geometry.mlp_chunks, geometry.dim_chunks):
            self._add_weighted(
                f"{prefix}.mlp.fc1", module=mlp, source=Source.BUF0, weights=WeightSource.ROM,
                weight_base=fc1_weight + first * geometry.dim, input_len=geometry.dim,
                chunks=min(geometry.dim_chunks, geometry.mlp_chunks - first),
                chunk_offset=first, use_bias=1, bias_base=fc1_bias + first,
                target=Source.HIDDEN, sink=Sink.LIF, layer=fc1_lif["layer"],
                theta_base=fc1_lif["theta_base"] + first)
        self._add_weighted(
            f"{prefix}.mlp.fc2", module=mlp, source=Source.HIDDEN, weights=WeightSource.ROM,
            weight_base=self._weights(f"{prefix}.mlp.fc2.weight"),
            input_len=geometry.mlp_dim, use_bias=1,
            bias_base=self._biases(f"{prefix}.mlp.fc2.bias"), operand=Operand.STREAM,
            sink=Sink.STORE_STREAM)

    def _add_head(self) -> None:
        """Append the head's passes: head.in's LIF, then the logits from its counts."""
        geometry = self.geometry
        head = geometry.modules - 1
        # head.in writes no spike map: the head reads its per-channel counts (COUNTS)
        self._add(module=head, operand=Operand.STREAM, **self._theta("head.in"))
        # The head is linear in the spike counts: logits = bias + sum_c count_c * W[:, c].
        # head.in counts its spikes per channel as it fires; the head then walks the counts'
        # bit planes (W[:, c] << b for each set bit b of count_c), a few events a channel
        # instead of one per spike.
        self._add_weighted("head", module=head, source=Source.COUNTS,
                           weights=WeightSource.ROM, weight_base=self._weights("head.weight"),
                           input_len=geometry.dim, once=1, groups=geometry.count_bits,
                           count_planes=1, chunks=geometry.class_chunks, sink=Sink.LOGITS,
                           skip_empty=1)

    def layout(self) -> data.StructLayout:
        """Return the pass descriptor layout sized for this plan's memories."""
        return pass_layout(self.geometry, len(self.weight_words), len(self.bias_words),
                           len(self.theta_words), split=self.split)

    def pass_words(self) -> list[int]:
        """Return each pass's descriptor as one integer of :meth:`layout` (the pass table)."""
        layout = self.layout()
        return [layout.const(p).as_value().value for p in self.passes]

    def memory_bits(self) -> dict[str, int]:
        """Return the bits of every memory of the core, by name (the sum is what must fit)."""
        g = self.geometry
        steps_tokens = g.t_max * g.tokens
        return {
            "weights": len(self.weight_words) * 8 * g.lanes,
            "biases": len(self.bias_words) * g.bias_bits * g.lanes,
            "thresholds": len(self.theta_words) * g.bits["membrane"] * g.lanes,
            "patches": 2 * g.tokens * 8 * g.patch_len,  # two banks (none with a stem)
            "spike_maps": steps_tokens * (4 * g.dim_segments * g.word_bits(g.dim_word_bits)
                                          + g.mlp_segments * g.word_bits(g.mlp_word_bits)),
            "embed_current": 0 if g.stem_modules else g.tokens * g.dim * g.bits["embed_current"],
            "membranes": g.tokens * g.dim * g.bits["membrane"],
            # two buffers with a step-major stem (rtl/stem_front.py)
            "stream": g.stream_buffers * steps_tokens * g.dim * g.bits["stream"],
            "stream_spike": g.dim * g.bits["stream"],
            "kv": (g.parallel_heads * g.t_max * g.kv_rows * g.head_dim
                   * g.bits["attention"]),
            # head.in's counts per channel, with segments (else registers)
            "head_counts": (max(g.dim_segments, 2) * g.word_bits(g.dim_word_bits)
                            * g.count_bits if g.counts_in_memory else 0),
            # the pass table becomes a ROM as deep as the power of two its indices need
            "passes": (1 << (len(self.passes) - 1).bit_length()) * self.layout().size,
        }
