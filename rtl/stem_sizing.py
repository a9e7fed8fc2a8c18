"""The stem engine's memories and block RAM, from its plan (before any synthesis).

The same rules as the core's estimate (:mod:`stepvit.rtl.sizing`): a memory's block RAM
as Yosys maps it, shallow memories in distributed RAM, shallow ROMs as logic. The shapes
mirror :mod:`stepvit.rtl.stem_unit`, :mod:`stepvit.rtl.stem_conv` and
:mod:`stepvit.rtl.stem_engine`, one entry per memory: the shared conv's tap ROMs and banks
once, each module's membranes and spike maps, and stage 0's kept current. A chunk-major
plan's banks and membranes are one chunk's, its emitted maps every step's (``T`` times one
step's), a pooled stage's LIF map one chunk's of one step, and stage 0 keeps no current.
"""

from __future__ import annotations

import numpy as np

from stepvit.rtl.sizing import MemoryShape, memory_bram36
from stepvit.rtl.stem_conv import shared_sum_bits
from stepvit.rtl.stem_map_ddr import read_fifo_beats, staged_depth
from stepvit.rtl.stem_plan import PLANES, StemPlan
from stepvit.rtl.stem_tiles import tap_bank_depth
from stepvit.rtl.top import DEFAULT_MAX_BURST

#: One memory of the stem engine: the sizing model's record of a memory.
StemMemory = MemoryShape


def stem_memories(plan: StemPlan, bits: dict[str, int], *,
                  streamed: bool = False, maps_ddr: bool = False,
                  data_width: int = 64) -> dict[str, StemMemory]:
    """Return ``name -> StemMemory`` of every memory of the stem engine of ``plan``.

    ``streamed`` (a chunk-major plan): the tap weights stream from DDR
    (:mod:`stepvit.rtl.stem_tiles`): each tap's memory holds two of the largest
    ``(module, chunk)`` tiles, ``2·Cin_max`` words, or where fewer words take less block
    RAM one tile's power of two (:func:`~stepvit.rtl.stem_tiles.tap_bank_depth`), in place
    of every module's words.
    ``maps_ddr`` (a chunk-major plan): the emitted maps are in DDR
    (:mod:`stepvit.rtl.stem_map_ddr`): no map, but its staging FIFO (``map_staged``) and
    its read FIFO of ``data_width``-bit beats (``map_reads``).
    """
    lanes = plan.lanes
    channels, height, width = plan.stages[0].in_shape
    # two pixel banks in one memory, written a byte (a channel) at a time
    memories = {"pixels": StemMemory(PLANES * channels, 2 * height * width,
                                     granularity=PLANES)}
    # the shared conv: every module's words of a tap in one ROM, one set of banks
    taps = max(stage.kernel ** 2 for stage in plan.stages)
    words = sum(stage.in_shape[0] * plan.chunks(index) for index, stage in enumerate(plan.stages))
    if streamed:
        if not plan.chunk_major:
            raise ValueError("streamed stem taps need a chunk-major plan")
        tile = max(stage.in_shape[0] for stage in plan.stages)
    for tap in range(taps):
        memories[f"tap{tap}"] = (StemMemory(8 * lanes, tap_bank_depth(tile, lanes)) if streamed
                                 else StemMemory(8 * lanes, words, rom=True))
    depth = max(plan.bank_depth(index) for index in range(len(plan.stages)))
    for bank in range(plan.modulus ** 2):
        memories[f"bank{bank}"] = StemMemory(shared_sum_bits(bits) * lanes, depth)
    if plan.chunk_major:
        memories.update(_chunk_major_module_memories(plan, bits, maps_ddr))
        if maps_ddr:
            memories["map_staged"] = StemMemory(lanes, staged_depth(plan))
            memories["map_reads"] = StemMemory(data_width, read_fifo_beats(DEFAULT_MAX_BURST))
        return memories
    for index, stage in enumerate(plan.stages):
        chunks = plan.chunks(index)
        name = stage.name.replace(".", "")
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        if index == 0:
            memories[f"{name}_kept"] = StemMemory(bits["embed_current"] * lanes,
                                                  lif_positions * chunks)
        memories[f"{name}_membranes"] = StemMemory(bits["membrane"] * lanes,
                                                   lif_positions * chunks)
        memories[f"{name}_lif_map"] = StemMemory(chunks * lanes, lif_positions,
                                                 granularity=lanes)
        if stage.pool == "after":
            memories[f"{name}_out_map"] = StemMemory(chunks * lanes,
                                                     int(np.prod(stage.out_shape[1:])))
    return memories


def _chunk_major_module_memories(plan: StemPlan, bits: dict[str, int], maps_ddr: bool = False
                                 ) -> dict[str, StemMemory]:
    """Return each module's memories in a chunk-major plan (:mod:`stepvit.rtl.stem_unit`).

    ``maps_ddr``: no emitted map (they are in DDR).
    """
    lanes = plan.lanes
    # one chunk's membranes of one module at a time: every module's in one memory
    memories = {"membranes": StemMemory(bits["membrane"] * lanes,
                                          plan.shared_membrane_depth)}
    for index, stage in enumerate(plan.stages):
        chunks = plan.chunks(index)
        name = stage.name.replace(".", "")
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        out_positions = int(np.prod(stage.out_shape[1:]))
        if stage.pool == "after":
            memories[f"{name}_lif_map"] = StemMemory(lanes, lif_positions)
        if not maps_ddr:
            memories[f"{name}_out_map"] = StemMemory(
                chunks * lanes, plan.t_max * out_positions,
                granularity=None if rewrites_out_map(plan, index) else lanes)
    return memories


#: LUTs a 36 Kb block RAM is worth where a design trades one for the other: the PYNQ-Z2's
#: (53,200 LUTs, 140 BRAM36), the board the designs are short of block RAM on.
LUTS_PER_BRAM36 = 380


def rewrites_out_map(plan: StemPlan, index: int) -> bool:
    """Return whether module ``index`` writes its emitted map whole words (chunk-major).

    A chunk-major pass writes one chunk's lanes of each word. With a write enable a chunk,
    block RAM gives each chunk whole 9-bit bytes (:func:`~stepvit.rtl.sizing.memory_bram36`):
    at 4 lanes more than twice the bits. Whole words instead cost the unit a read a cycle
    before each write and a select of the pass's chunk (:data:`STEM_REWRITE_LUTS_PER_BIT` a
    bit): taken where the block RAM saved is worth more than that logic
    (:data:`LUTS_PER_BRAM36`).
    """
    if not plan.chunk_major:
        return False
    width = plan.chunks(index) * plan.lanes
    depth = plan.t_max * int(np.prod(plan.stages[index].out_shape[1:]))
    saved = memory_bram36(width, depth, granularity=plan.lanes) - memory_bram36(width, depth)
    return saved * LUTS_PER_BRAM36 > STEM_REWRITE_LUTS_PER_BIT * width


#: Logic LUTs of the stem engine per bank lane bit: one datapath of ``m²`` banks of
#: ``lanes`` adders as wide as the widest current, each with its tap multiplexer, the
#: window tree and the LIFs, shared by every module. Fitted to one synthesis, Yosys
#: ``synth_xilinx`` of the Fashion-MNIST stem at 16 lanes (24,960 logic LUTs for 9 banks of
#: 16 lanes of 18 bits: 9.63, docs/accelerator.md); the modules' own loops and the
#: selection of their constants are in the fit. Less what the bank lanes' plane shifter
#: took, gone with Horner's rule for stage 0: 3,447 LUTs over the 1,782 bank bits of the
#: Fashion-MNIST design at 32 + 11 lanes (35,061 to 31,614 by ``stepvit synth``).
STEM_LUT_PER_BANK_BIT = 7.70


#: Logic LUTs of a chunk-major stem engine (its module units, their loops and memories of
#: their own): a bank lane bit, as :data:`STEM_LUT_PER_BANK_BIT`, and a module. Fitted to
#: Yosys (``synth_xilinx -abc9``, flattened) of Spikformer-4-384's whole design at 8 + 4,
#: 8 + 8 and 16 + 8 lanes (everything streamed, the stream in DDR, its tables ROMs), less
#: its core alone (17,129 LUTs at 8 lanes, ``LUT_MODEL``'s fit): its stem 13,483 LUTs at 4
#: lanes, 18,242 and 18,375 at 8, where the step-major constant gave 10,009 and 14,179
#: (docs/results/2026-12-06-distributed-ram.md).
STEM_CHUNK_MAJOR_LUTS = {"per_bank_bit": 8.66, "per_module": 564}


#: Logic LUTs a bit of an emitted map written whole words (:func:`rewrites_out_map`)
#: adds: a chunk's select of the new lanes or the word's old bits. Yosys (``synth_xilinx``,
#: flattened) of Spikformer-4-384's chunk-major stem units 2 and 3 alone at 4 lanes, 192-
#: and 384-bit words: 191 and 534 LUTs more than with a write enable a chunk (and 6.5 block
#: RAMs fewer each), 725 over 576 bits.
STEM_REWRITE_LUTS_PER_BIT = 1.26


#: Logic LUTs the stem's maps in DDR add (rtl/stem_map_ddr.py: the drain's addresses and
#: strobes, the runs, the word assembler and the engine's waits), in place of the emitted
#: maps' rewrites (:data:`STEM_REWRITE_LUTS_PER_BIT`) they replace. Fitted to Yosys
#: (``synth_xilinx -abc9``, flattened) of Spikformer-4-384's 8 + 4 design (everything
#: streamed, the stream in DDR): its logic LUTs went from 27,250 to 26,461 with the maps in
#: DDR, where the rewrites of 1,056 map bits had been 1,331
#: (docs/results/2026-12-06-stem-maps-ddr.md).
STEM_MAPS_DDR_LUTS = 540


def stem_logic_luts(plan: StemPlan, bits: dict[str, int], *, maps_ddr: bool = False) -> int:
    """Return the stem engine's logic LUTs (:data:`STEM_LUT_PER_BANK_BIT`), no RAM.

    With the emitted maps written whole words (:data:`STEM_REWRITE_LUTS_PER_BIT`), or with
    them in DDR (``maps_ddr``, :data:`STEM_MAPS_DDR_LUTS`).
    """
    bank_bits = plan.modulus ** 2 * plan.lanes * shared_sum_bits(bits)
    rewritten = sum(plan.chunks(index) * plan.lanes for index in range(len(plan.stages))
                    if rewrites_out_map(plan, index))
    if plan.chunk_major:
        return round(STEM_CHUNK_MAJOR_LUTS["per_bank_bit"] * bank_bits
                     + STEM_CHUNK_MAJOR_LUTS["per_module"] * len(plan.stages)
                     + (STEM_MAPS_DDR_LUTS if maps_ddr
                        else STEM_REWRITE_LUTS_PER_BIT * rewritten))
    return round(STEM_LUT_PER_BANK_BIT * bank_bits + STEM_REWRITE_LUTS_PER_BIT * rewritten)


def stem_dense_events(plan: StemPlan) -> int:
    """Return the stem engine's cycles for one image with every input bit 1, every step on.

    Stage 0 walks every pixel bit plane once per image, a later module every input spike
    of every step, each once per chunk of its outputs; each module clears its part of the
    shared banks (stage 0 once per image, and doubles it between its planes) and fires
    every LIF position a chunk a cycle at every step. A chunk-major plan does the same
    work, but clears each chunk's words apart (the same words in all).
    """
    def cleared(index: int) -> int:
        # the words a step's clears of module ``index`` zero, over all its passes
        return plan.bank_depth(index) * plan.chunks(index) // plan.pass_chunks(index)
    channels, height, width = plan.stages[0].in_shape
    events = height * width * channels * PLANES * plan.chunks(0) + PLANES * cleared(0)
    for index, stage in enumerate(plan.stages):
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        per_step = lif_positions * plan.chunks(index)
        if index > 0:
            per_step += cleared(index) + int(np.prod(stage.in_shape)) * plan.chunks(index)
        events += plan.t_max * per_step
    return events


def stem_bram36(plan: StemPlan, bits: dict[str, int], *, streamed: bool = False) -> float:
    """Return the stem engine's block RAM (36 Kb units); ``streamed``: its taps streamed."""
    return sum(memory.bram36 for memory in stem_memories(plan, bits, streamed=streamed).values())


__all__ = ["LUTS_PER_BRAM36", "STEM_LUT_PER_BANK_BIT", "STEM_MAPS_DDR_LUTS",
           "STEM_REWRITE_LUTS_PER_BIT", "StemMemory", "rewrites_out_map", "stem_bram36",
           "stem_dense_events", "stem_logic_luts", "stem_memories"]
