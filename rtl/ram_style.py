"""Where a memory goes on the FPGA: UltraRAM, by the sizing model's placement.

On a board with UltraRAM (the KV260, the ZCU104) the sizing model places some memories of
a design there (:func:`stepvit.rtl.sizing.place_ultraram`), by the names it gives them
(the core's as in :func:`stepvit.rtl.sizing.memory_shapes`, the stem engine's as in
:func:`stepvit.rtl.stem_sizing.stem_memories` with ``stem.`` before). The generator marks
each of them ``(* ram_style = "ultra" *)``, which Yosys (``synth_xilinx -uram``) and Vivado
both follow; the others are left to the tools.
"""

from __future__ import annotations

from collections.abc import Collection

#: The attribute that puts a memory into UltraRAM (Yosys's and Vivado's name for it).
ULTRA = {"ram_style": "ultra"}


def ram_attrs(ultraram: Collection[str], name: str) -> dict[str, str]:
    """Return the attributes of memory ``name``: :data:`ULTRA` if placed in UltraRAM."""
    return dict(ULTRA) if name in ultraram else {}


__all__ = ["ULTRA", "ram_attrs"]
