"""Fixtures of the host tests: an overlay folder and the pynq test double in sys.modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pynq_double import FakeBoard, fake_pynq_module


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
