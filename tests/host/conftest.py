"""Fixtures of the host tests: a tiny export and images, an overlay folder, the pynq double."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from pynq_double import FakeBoard, fake_pynq_module

from stepvit.model.export import Export, load_export


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    """A random export: 4x6 images, patch 2, dim 8, depth 1, 3 classes, T 3 (a module may
    override it with its own)."""
    return load_export(random_export(tmp_path_factory.mktemp("export") / "tiny",
                                     image_shape=[1, 4, 6], seed=5))


@pytest.fixture
def images(export: Export) -> np.ndarray:
    """Five random images of the export's shape."""
    return np.random.default_rng(0).integers(0, 256, size=(5, *export.arch["image_shape"]),
                                             dtype=np.uint8)


@pytest.fixture
def overlay_dir(tmp_path: Path) -> Path:
    """A folder with a stand-in ``stepvit.bit`` and ``stepvit.hwh``."""
    (tmp_path / "stepvit.bit").write_bytes(b"bitstream")
    (tmp_path / "stepvit.hwh").write_text("<hwh/>")
    return tmp_path


@pytest.fixture
def board(export, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    """The pynq double, built from the test module's ``export``, as ``pynq``, run as on a
    board: as root, with the PYNQ environment's ``XILINX_XRT``."""
    fake = FakeBoard(export)
    monkeypatch.setitem(sys.modules, "pynq", fake_pynq_module(fake))
    monkeypatch.setenv("XILINX_XRT", "/usr")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return fake
