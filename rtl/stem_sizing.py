"""The stem engine's memories and block RAM, from its plan (before any synthesis).

The same rules as the core's estimate (:mod:`stepvit.rtl.sizing`): a memory's block RAM
as Yosys maps it, shallow memories in distributed RAM, shallow ROMs as logic. The shapes
mirror :mod:`stepvit.rtl.stem_unit`, :mod:`stepvit.rtl.stem_conv` and
:mod:`stepvit.rtl.stem_engine`, one entry per memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepvit.rtl.sizing import memory_bram36, memory_lutram_luts
from stepvit.rtl.stem_banks import bank_modulus
from stepvit.rtl.stem_conv import PLANES
from stepvit.rtl.stem_plan import StemPlan


@dataclass(frozen=True)
class StemMemory:
    """One memory of the stem engine: its shape, whether it is a ROM, its write granule."""

    width: int
    depth: int
    rom: bool = False
    granularity: int | None = None

    @property
    def bram36(self) -> float:
        """Its 36 Kb block RAMs (0 when it maps to LUTs)."""
        return memory_bram36(self.width, self.depth, rom=self.rom)

    @property
    def lutram_luts(self) -> int:
        """Its LUTs of distributed RAM (0 in block RAM or as a ROM)."""
        return memory_lutram_luts(self.width, self.depth, rom=self.rom,
                                  granularity=self.granularity)


def stem_memories(plan: StemPlan, bits: dict[str, int]) -> dict[str, StemMemory]:
    """Return ``name -> StemMemory`` of every memory of the stem engine of ``plan``."""
    lanes = plan.lanes
    channels, height, width = plan.stages[0].in_shape
    # two pixel banks in one memory, written a byte (a channel) at a time
    memories = {"pixels": StemMemory(PLANES * channels, 2 * height * width,
                                     granularity=PLANES)}
    for index, stage in enumerate(plan.stages):
        chunks = plan.chunks(index)
        name = stage.name.replace(".", "")
        current = bits["embed_current" if index == 0 else "current"]
        modulus = bank_modulus(stage.kernel, stage.stride, plan.window_pool(index)[0])
        for tap in range(stage.kernel ** 2):
            memories[f"{name}_tap{tap}"] = StemMemory(8 * lanes, stage.in_shape[0] * chunks,
                                                      rom=True)
        for bank in range(modulus ** 2):
            memories[f"{name}_bank{bank}"] = StemMemory(current * lanes, plan.bank_depth(index))
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        memories[f"{name}_membranes"] = StemMemory(bits["membrane"] * lanes,
                                                   lif_positions * chunks)
        memories[f"{name}_lif_map"] = StemMemory(chunks * lanes, lif_positions,
                                                 granularity=lanes)
        if stage.pool == "after":
            memories[f"{name}_out_map"] = StemMemory(chunks * lanes,
                                                     int(np.prod(stage.out_shape[1:])))
    return memories


#: Logic LUTs of the stem engine per bank lane bit: every module has ``m²`` banks of
#: ``lanes`` adders as wide as its current, each with its ``k²``-way tap multiplexer, and
#: its window tree and LIFs. Fitted to one synthesis, Yosys ``synth_xilinx`` of the
#: Fashion-MNIST stem at 16 lanes (73,473 logic LUTs, docs/accelerator.md); the logic
#: grows with the modules, the lanes and the widths alike.
STEM_LUT_PER_BANK_BIT = 8.1


def stem_logic_luts(plan: StemPlan, bits: dict[str, int]) -> int:
    """Return the stem engine's logic LUTs (:data:`STEM_LUT_PER_BANK_BIT`), no RAM."""
    bank_bits = 0
    for index, stage in enumerate(plan.stages):
        modulus = bank_modulus(stage.kernel, stage.stride, plan.window_pool(index)[0])
        current = bits["embed_current" if index == 0 else "current"]
        bank_bits += modulus ** 2 * plan.lanes * current
    return round(STEM_LUT_PER_BANK_BIT * bank_bits)


def stem_dense_events(plan: StemPlan) -> int:
    """Return the stem engine's cycles for one image with every input bit 1, every step on.

    Stage 0 walks every pixel bit plane once per image, a later module every input spike
    of every step, each once per chunk of its outputs; each module clears its banks and
    fires every LIF position a chunk a cycle at every step.
    """
    channels, height, width = plan.stages[0].in_shape
    events = height * width * channels * PLANES * plan.chunks(0)
    for index, stage in enumerate(plan.stages):
        lif_positions = int(np.prod(stage.lif_shape[1:]))
        per_step = plan.bank_depth(index) + lif_positions * plan.chunks(index)
        if index > 0:
            per_step += int(np.prod(stage.in_shape)) * plan.chunks(index)
        events += plan.t_max * per_step
    return events


def stem_bram36(plan: StemPlan, bits: dict[str, int]) -> float:
    """Return the stem engine's block RAM (36 Kb units)."""
    return sum(memory.bram36 for memory in stem_memories(plan, bits).values())


def stem_lutram_luts(plan: StemPlan, bits: dict[str, int]) -> int:
    """Return the stem engine's LUTs of distributed RAM."""
    return sum(memory.lutram_luts for memory in stem_memories(plan, bits).values())


__all__ = ["STEM_LUT_PER_BANK_BIT", "StemMemory", "stem_bram36", "stem_dense_events",
           "stem_logic_luts", "stem_lutram_luts", "stem_memories"]
