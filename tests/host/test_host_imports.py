"""host/ runs on a board's Python: numpy, pyyaml; no torch, amaranth, cocotb, tqdm, matplotlib."""

from __future__ import annotations

import subprocess
import sys

BOARD_ABSENT = ("torch", "amaranth", "cocotb", "cocotb_tools", "cocotbext", "tqdm", "matplotlib",
                "pynq", "sklearn")

HOST_MODULES = ("cli", "errors", "registers", "export", "boards", "accelerator", "backend_pynq",
                "backend_sim", "backend_golden", "bench", "plot", "commands", "demo")

PROBE = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BOARD_ABSENT!r}:
            raise ImportError(f"{{name}} is not on a board")
        return None

sys.meta_path.insert(0, Absent())
import importlib
for name in {HOST_MODULES!r}:
    importlib.import_module("stepvit.host." + name)
from stepvit.host.cli import build_parser
help_text = build_parser().format_help()
assert "bench" in help_text and "run" in help_text, help_text
print("ok")
"""


def test_host_imports_without_the_heavy_packages():
    process = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "ok"


def test_the_probe_does_block_a_heavy_import():
    probe = PROBE.replace('print("ok")', "import torch")
    process = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120)
    assert process.returncode != 0 and "torch is not on a board" in process.stderr
