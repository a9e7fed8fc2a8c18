"""Imports follow the pipeline: contract ← model, rtl ← sim ← host (README; docs/architecture.md).

- ``stepvit.model.export`` (the export contract) imports nothing of stepvit but itself;
- ``model/`` imports ``model/``; ``rtl/`` imports the contract and ``rtl/``; ``sim/``
  imports ``model/`` and ``rtl/``; nothing imports ``host/`` but ``host/`` itself;
- the contract, ``rtl/protocol.py``, ``rtl/boards.py``, ``rtl/weight_image.py``,
  ``stepvit.model`` itself and every module of ``host/`` import on a board's Python: numpy
  and pyyaml, no torch, amaranth, cocotb, scikit-learn, matplotlib, tqdm (nor pynq, which a
  board has but a host may not).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What a board's Python lacks (pynq too: host/ imports it only when a board is opened).
BOARD_ABSENT = ("torch", "amaranth", "cocotb", "cocotb_tools", "cocotbext", "sklearn",
                "matplotlib", "tqdm", "pynq")
#: stepvit packages each part may import (function-level imports included).
ALLOWED = {
    "model/export": ("stepvit.model.export",),
    "model": ("stepvit.model",),
    "rtl": ("stepvit.model.export", "stepvit.rtl"),
    "sim": ("stepvit.model", "stepvit.rtl", "stepvit.sim"),
    "host": ("stepvit.model", "stepvit.rtl", "stepvit.sim", "stepvit.host"),
}

PROBE = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BOARD_ABSENT!r}:
            raise ImportError(f"{{name}} is not on a board")
        return None

sys.meta_path.insert(0, Absent())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ok")
"""


def part_of(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    return "model/export" if relative.startswith("model/export/") else relative.split("/")[0]


def stepvit_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("stepvit.")]


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def modules_of(package: str, folder: Path) -> list[str]:
    return sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules([str(folder)]))


def run_on_a_board(modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True,
                          text=True, timeout=120)


def test_every_import_follows_the_pipeline() -> None:
    sources = [path for part in ("model", "rtl", "sim", "host")
               for path in sorted((ROOT / part).rglob("*.py"))]
    assert len(sources) > 40
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sources for line, name in stepvit_imports(path)
             if not allowed(name, ALLOWED[part_of(path)])]
    assert wrong == []


def test_the_rule_sees_a_wrong_import() -> None:
    source = ROOT / "rtl" / "protocol.py"
    imports = stepvit_imports(source) + [(1, "stepvit.host.accelerator")]
    assert [name for _, name in imports if not allowed(name, ALLOWED["rtl"])] == [
        "stepvit.host.accelerator"]


@pytest.mark.parametrize("group", ["contract", "protocol", "host"])
def test_imports_on_a_boards_python(group: str) -> None:
    modules = {
        "contract": ["stepvit.model", "stepvit.model.export",
                     *modules_of("stepvit.model.export", ROOT / "model" / "export")],
        "protocol": ["stepvit.rtl.protocol", "stepvit.rtl.boards",
                     "stepvit.rtl.weight_image"],
        "host": modules_of("stepvit.host", ROOT / "host"),
    }[group]
    assert len(modules) >= 2
    process = run_on_a_board(modules)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip() == "ok"


def test_stepvit_help_runs_on_a_boards_python() -> None:
    code = PROBE.replace('print("ok")', "from stepvit.host.cli import main\nmain(['--help'])")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "train" in process.stdout and "bench" in process.stdout and "run" in process.stdout


def test_the_probe_does_block_a_heavy_import() -> None:
    process = run_on_a_board(["torch"])
    assert process.returncode != 0 and "torch is not on a board" in process.stderr
