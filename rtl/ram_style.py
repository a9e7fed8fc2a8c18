"""Where a memory goes on the FPGA: UltraRAM or LUTs, by the sizing model's placement.

The sizing model places some memories of a design by the names it gives them (the core's
as in :func:`stepvit.rtl.sizing.memory_shapes`, the stem engine's as in
:func:`stepvit.rtl.stem_sizing.stem_memories` with ``stem.`` before):

- on a board with UltraRAM (the KV260, the ZCU104), in UltraRAM
  (:func:`stepvit.rtl.sizing.place_ultraram`), marked ``(* ram_style = "ultra" *)``;
- on a board short of block RAM, in distributed RAM where its LUTs cost less than the
  block RAM they free is worth (:func:`stepvit.rtl.sizing.place_distributed`), marked
  ``(* ram_style = "distributed" *)``.

Yosys (``synth_xilinx``) and Vivado both follow the mark; the other memories are left to
the tools. A placement is a mapping ``name -> style``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: The ``ram_style`` of a memory in UltraRAM (Yosys's and Vivado's name for it).
ULTRA = "ultra"
#: The ``ram_style`` of a memory in distributed RAM (LUTs of SLICEMs).
DISTRIBUTED = "distributed"


def ram_attrs(ram_styles: Mapping[str, str] | None, name: str) -> dict[str, str]:
    """Return the attributes of memory ``name``: its ``ram_style`` where it is placed."""
    style = (ram_styles or {}).get(name)
    return {} if style is None else {"ram_style": style}


def ram_styles_of(*, ultraram: Iterable[str] = (), distributed: Iterable[str] = ()
                  ) -> dict[str, str]:
    """Return the placement of memories in UltraRAM and in distributed RAM."""
    return {**{name: DISTRIBUTED for name in distributed}, **{name: ULTRA for name in ultraram}}


def placement_lists(ram_styles: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Return ``{"ultraram": names, "distributed": names}``, each only where not empty.

    The form of a placement in reports and summaries (sorted names).
    """
    lists = {"ultraram": ULTRA, "distributed": DISTRIBUTED}
    return {key: names for key, style in lists.items()
            if (names := sorted(name for name, placed in (ram_styles or {}).items()
                                if placed == style))}


__all__ = ["DISTRIBUTED", "ULTRA", "placement_lists", "ram_attrs", "ram_styles_of"]
