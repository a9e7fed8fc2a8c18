"""host/ runs on a board's Python: numpy + pyyaml only, no torch, amaranth or cocotb."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import stepvit.host

BLOCKED = ("torch", "amaranth", "cocotb", "cocotb_tools", "cocotbext", "sklearn",
           "matplotlib", "tqdm")

# A module set to None in sys.modules makes its import raise ImportError.
SHIM = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in BLOCKED)


def host_modules():
    path = Path(stepvit.host.__file__).parent
    return sorted(f"stepvit.host.{info.name}" for info in pkgutil.iter_modules([str(path)]))


def run_blocked(code):
    return subprocess.run([sys.executable, "-c", SHIM + code], capture_output=True, text=True,
                          timeout=120)


def test_there_are_host_modules_to_check():
    assert "stepvit.host.cli" in host_modules()
    assert "stepvit.host.errors" in host_modules()


def test_every_host_module_imports_without_heavy_packages():
    code = "import importlib\n" + "".join(
        f"importlib.import_module({name!r})\n" for name in host_modules())
    result = run_blocked(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_stepvit_help_runs_without_heavy_packages():
    result = run_blocked("from stepvit.host.cli import main\nmain(['--help'])\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train" in result.stdout and "Train spiking ViTs" in result.stdout


def test_the_shim_does_block():
    result = run_blocked("import torch\n")
    assert result.returncode != 0 and "import of torch halted" in result.stderr
