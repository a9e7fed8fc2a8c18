"""Fixtures of every test folder: the tiny random export, one Verilator cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepvit.model.random_export import make_random_export
from stepvit.sim.verilator import CACHE_VARIABLE

#: The tiny network most tests run: 4x4 images, patch 2, dim 8, 2 heads, depth 1, MLP 16,
#: 3 classes, T 3.
TINY = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
            num_classes=3, t_max=3)


@pytest.fixture(scope="session")
def random_export() -> Callable[..., Path]:
    """Return ``make(out_dir, *, seed=0, **changes)``, which writes a random export into
    ``out_dir`` and returns the folder.

    The export has the tiny shape (:data:`TINY`); ``changes`` replace any keyword of
    :func:`stepvit.model.random_export.make_random_export` (a shape, a mask, the neuron).
    """

    def make(out_dir: Path, *, seed: int = 0, **changes: Any) -> Path:
        return make_random_export(out_dir, **{**TINY, "seed": seed, **changes})

    return make


@pytest.fixture(scope="session", autouse=True)
def shared_verilator_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Verilate each design once for the whole run: one cache for every test and worker.

    Tests that build the same design (the tiny export at the same options) reuse its
    library, as ``stepvit`` commands with ``STEPVIT_VERILATOR_CACHE`` set do. Under
    pytest-xdist the folder is beside the workers' own, so they share it (builds of one key
    wait for each other: :func:`stepvit.sim.verilator.build_library`). A test of a build
    folder's own cache deletes the variable (``monkeypatch.delenv``).
    """
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "verilator"
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_VARIABLE, str(folder))
        yield folder


#: The test files that take longest (a minute or more of the suite's 2 cores, measured
#: 2026-12-06: docs/results/2026-12-06-test-time.md), longest first.
LONGEST_FILES = (
    "tests/model/test_export_agreement.py",
    "tests/rtl/test_synth_report.py",
    "tests/rtl/test_core_segments.py",
    "tests/host/test_host_demo.py",
    "tests/sim/test_virtual_board_activations.py",
    "tests/rtl/test_stem_chunk_major.py",
    "tests/rtl/test_core_stem.py",
    "tests/sim/test_sim_ddr_stem.py",
    "tests/sim/test_sim_verilator_command.py",
    "tests/sim/test_sim_cocotb_verilator.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the test files longest first: :data:`LONGEST_FILES`, then the files with a
    ``slow`` test, then the rest, each file's tests in their own order.

    ``make test`` hands a file at a time to each worker in this order
    (``--dist loadfile --no-loadscope-reorder``), so the long files start first and the
    workers end together: pytest-xdist's own order (the most tests first) left a one-test
    file of two minutes for the end, with the other worker idle. A file missing from the
    list only runs later; a stale list costs time, never a test.
    """
    slow_files = {item.nodeid.split("::")[0] for item in items
                  if item.get_closest_marker("slow") is not None}

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        if path in LONGEST_FILES:
            return LONGEST_FILES.index(path)
        return len(LONGEST_FILES) + (path not in slow_files)

    items.sort(key=rank)
