"""The longest register-to-register logic path of a mapped netlist: a clock estimate.

Yosys's Xilinx cell library (``share/xilinx/cells_sim.v``) carries the cells' timing in
``specify`` blocks (7-series figures): combinational arcs (``(I0 => O) = 642``), clock to
output (``(posedge C => (Q : D)) = 303``) and setup (``$setup(CE, posedge C, 109)``).
:func:`cell_timing` reads them; :func:`longest_path` walks a netlist that ``synth_xilinx``
mapped (``write_json``) and returns the slowest path from a clocked cell's output to a
clocked cell's input: clock to output, every cell on the way, and the setup at the end.

Routing is not included: on a placed 7-series design the nets add about as much delay
again as the cells, so the clock this suggests is an upper bound, not a timing sign-off.
Paths from and to the top's ports are left out (they meet the interconnect's registers).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_MODULE = re.compile(r"^module\s+(\w+)\b(.*?)^endmodule", re.MULTILINE | re.DOTALL)
_SPECIFY = re.compile(r"\bspecify\b(.*?)\bendspecify\b", re.DOTALL)
_PIN = r"(\w+)\s*(?:\[(\d+)\])?"
_COMBINATIONAL = re.compile(rf"\(\s*{_PIN}\s*[*=]>\s*{_PIN}\s*\)\s*=\s*(\d+)")
_CLOCK_TO_OUT = re.compile(rf"\(\s*(?:posedge|negedge)\s+\w+\s*=>\s*\(\s*{_PIN}\s*:[^)]*\)\s*\)"
                           r"\s*=\s*(\d+)")
_SETUP = re.compile(rf"\$setup\s*\(\s*{_PIN}\s*,[^,]*,\s*(?:/\*.*?\*/\s*)?(-?\d+)\s*\)")
_YOSYS_ONLY = re.compile(r"`ifndef\s+YOSYS.*?`else(.*?)`endif", re.DOTALL)


@dataclass
class CellTiming:
    """The timing of one library cell, in picoseconds.

    Attributes
    ----------
    arcs : dict
        ``(input pin, bit or None) -> {(output pin, bit or None): delay}``; ``None`` is
        every bit of the pin.
    clock_to_out : dict
        ``output pin -> delay`` from the clock edge (the cell is clocked when it has any).
    setup : dict
        ``input pin -> setup time`` before the clock edge (an endpoint of a path).
    """

    arcs: dict[tuple[str, int | None], dict[tuple[str, int | None], int]] = field(
        default_factory=lambda: defaultdict(dict))
    clock_to_out: dict[str, int] = field(default_factory=dict)
    setup: dict[str, int] = field(default_factory=dict)


def cell_timing(library: str | Path) -> dict[str, CellTiming]:
    """Return the timing of every cell with a ``specify`` block in ``library`` (Verilog).

    Conditional arcs (``if (...)``) are taken at their worst case; a negative setup time
    counts as zero (as Yosys's own ``sta`` does).
    """
    text = Path(library).read_text()
    cells: dict[str, CellTiming] = {}
    for name, body in _MODULE.findall(text):
        blocks = _SPECIFY.findall(_YOSYS_ONLY.sub(r"\1", body))
        if not blocks:
            continue
        timing = CellTiming()
        for block in blocks:
            for line in block.splitlines():
                line = line.split("//")[0]
                for pin, _bit, delay in _CLOCK_TO_OUT.findall(line):
                    timing.clock_to_out[pin] = max(timing.clock_to_out.get(pin, 0), int(delay))
                for pin, _bit, delay in _SETUP.findall(line):
                    timing.setup[pin] = max(timing.setup.get(pin, 0), int(delay), 0)
                if "posedge" in line or "negedge" in line:
                    continue
                for source, source_bit, target, target_bit, delay in _COMBINATIONAL.findall(line):
                    key = (source, int(source_bit) if source_bit else None)
                    out = (target, int(target_bit) if target_bit else None)
                    timing.arcs[key][out] = max(timing.arcs[key].get(out, 0), int(delay))
        cells[name] = timing
    return cells


def _arcs_from(timing: CellTiming, pin: str, bit: int, outputs: dict[str, list[Any]]
               ) -> list[tuple[str, int, int]]:
    """Return ``(output pin, bit, delay)`` for every arc from input ``pin[bit]``."""
    found: dict[tuple[str, int], int] = {}
    for key in ((pin, bit), (pin, None)):
        for (target, target_bit), delay in timing.arcs.get(key, {}).items():
            if target not in outputs:
                continue  # an output the netlist leaves unconnected drives nothing
            bits = range(len(outputs.get(target, []))) if target_bit is None else [target_bit]
            for index in bits:
                found[(target, index)] = max(found.get((target, index), 0), delay)
    return [(target, index, delay) for (target, index), delay in found.items()]


def _top_module(netlist: dict[str, Any]) -> dict[str, Any]:
    """Return the top module of a ``write_json`` netlist."""
    modules = netlist["modules"]
    for module in modules.values():
        if int(str(module.get("attributes", {}).get("top", "0")), 2):
            return module
    return next(iter(modules.values()))


def longest_path(netlist: dict[str, Any], library: dict[str, CellTiming]) -> dict[str, Any]:
    """Return the slowest register-to-register path of a mapped ``write_json`` netlist.

    Returns
    -------
    dict
        ``path_ps`` (clock to output + cells + setup), ``logic_levels`` (cells between the
        two clocked ends), ``fmax_mhz`` (1 / path, routing excluded), ``start`` and ``end``
        (``cell (TYPE.pin)``), ``path`` (each step: cell, type, arc, arrival in ps), and
        ``unknown_cells`` (types without timing: their outputs start no path).
    """
    cells = _top_module(netlist)["cells"]
    arrival: dict[int, int] = {}
    came_from: dict[int, tuple[int | None, str, str, str]] = {}
    edges: dict[int, list[tuple[int, int, str, str, str]]] = defaultdict(list)
    pending: dict[int, int] = defaultdict(int)
    endpoints: list[tuple[int, int, str, str, str]] = []
    unknown: dict[str, int] = defaultdict(int)
    for name, cell in cells.items():
        kind, connections = cell["type"].lstrip("\\"), cell["connections"]
        directions = cell.get("port_directions", {})
        timing = library.get(kind)
        if timing is None:
            unknown[kind] += 1
            continue
        outputs = {pin: bits for pin, bits in connections.items()
                   if directions.get(pin) == "output"}
        for pin, delay in timing.clock_to_out.items():
            for net in connections.get(pin, []):
                if isinstance(net, int) and delay > arrival.get(net, -1):
                    arrival[net] = delay
                    came_from[net] = (None, name, kind, f"{pin} (clock to out)")
        for pin, bits in connections.items():
            if directions.get(pin) != "input":
                continue
            for bit, net in enumerate(bits):
                if not isinstance(net, int):
                    continue
                if pin in timing.setup:
                    endpoints.append((net, timing.setup[pin], name, kind, pin))
                for target, index, delay in _arcs_from(timing, pin, bit, outputs):
                    out = outputs[target][index]
                    if isinstance(out, int):
                        edges[net].append((out, delay, name, kind, f"{pin}->{target}"))
                        pending[out] += 1
    # Arrival times in topological order over the nets (a mapped netlist has no loop).
    ready = deque(net for net in set(arrival) | set(edges) if pending[net] == 0)
    while ready:
        net = ready.popleft()
        for out, delay, name, kind, arc in edges.get(net, []):
            if net in arrival and arrival[net] + delay > arrival.get(out, -1):
                arrival[out] = arrival[net] + delay
                came_from[out] = (net, name, kind, arc)
            pending[out] -= 1
            if pending[out] == 0:
                ready.append(out)
    worst = max(((arrival[net] + setup, net, name, kind, pin)
                 for net, setup, name, kind, pin in endpoints if net in arrival),
                default=None)
    if worst is None:
        return {"path_ps": 0, "logic_levels": 0, "fmax_mhz": None, "start": None,
                "end": None, "path": [], "unknown_cells": dict(unknown)}
    total, net, end_name, end_kind, end_pin = worst
    path = []
    step: int | None = net
    while step is not None:
        previous, name, kind, arc = came_from[step]
        path.append({"cell": name, "type": kind, "arc": arc, "arrival_ps": arrival[step]})
        step = previous
    path.reverse()
    return {
        "path_ps": total,
        "logic_levels": len(path) - 1,
        "fmax_mhz": round(1e6 / total, 1),
        "start": f"{path[0]['cell']} ({path[0]['type']})",
        "end": f"{end_name} ({end_kind}.{end_pin}, setup {total - arrival[net]} ps)",
        "path": path,
        "unknown_cells": dict(unknown),
    }


def longest_path_of_file(netlist_json: str | Path, library: str | Path) -> dict[str, Any]:
    """Return :func:`longest_path` of a ``write_json`` file with the cells of ``library``."""
    netlist = json.loads(Path(netlist_json).read_text())
    return longest_path(netlist, cell_timing(library))
