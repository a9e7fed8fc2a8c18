"""board.yaml's ``ddr`` section: every board has its memory port's figures, checked on load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stepvit.model.export.errors import StepvitError
from stepvit.rtl.boards import BOARDS_DIR, board_names, load_board


def test_every_board_gives_its_memory_ports_figures() -> None:
    figures = {name: load_board(name).ddr for name in board_names()}
    pynq_z2 = figures["pynq-z2"]
    # one 64-bit AXI3 HP port of the Zynq-7000: 8 bytes a beat, a beat a cycle
    assert (pynq_z2.data_width, pynq_z2.max_burst, pynq_z2.bytes_per_cycle) == (64, 16, 8.0)
    assert pynq_z2.beat_bytes == 8 and pynq_z2.latency_cycles == 40
    for name in ("kv260", "zcu104"):
        assert (figures[name].data_width, figures[name].max_burst) == (128, 256)
        assert figures[name].bytes_per_cycle == 16.0


def test_every_figure_says_where_it_comes_from() -> None:
    for name in board_names():
        text = (BOARDS_DIR / name / "board.yaml").read_text()
        section = text[text.index("\nddr:"):]
        figures = re.findall(r"^  (\w+):", section, re.M)
        assert figures == ["data_width", "max_burst", "bytes_per_cycle", "latency_cycles"]
        assert section.count("# source:") == len(figures), name
        assert "latency" in section and "assumed, not measured" in section


def board_with(tmp_path: Path, **ddr: object) -> Path:
    """Write a copy of the pynq-z2's board.yaml with ``ddr`` changed (None: removed)."""
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    for key, value in ddr.items():
        if value is None:
            del fields["ddr"][key]
        else:
            fields["ddr"][key] = value
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    return tmp_path


def test_changed_figures_are_the_ones_loaded(tmp_path: Path) -> None:
    ddr = load_board(board_with(tmp_path, bytes_per_cycle=4.5, latency_cycles=90)).ddr
    assert (ddr.bytes_per_cycle, ddr.latency_cycles) == (4.5, 90)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("bytes_per_cycle", None, "missing field 'ddr.bytes_per_cycle'"),
    ("latency_cycles", None, "missing field 'ddr.latency_cycles'"),
    ("data_width", 48, "ddr.data_width: expected an AXI data width"),
    ("data_width", "64", "ddr.data_width: expected an AXI data width"),
    ("max_burst", 0, "ddr.max_burst: expected an integer of 1-256 beats, got 0"),
    ("max_burst", 512, "ddr.max_burst: expected an integer of 1-256 beats, got 512"),
    ("bytes_per_cycle", 0, "ddr.bytes_per_cycle: expected a positive number"),
    ("bytes_per_cycle", 16, "of at most a beat (8 bytes), got 16"),
    ("bytes_per_cycle", True, "ddr.bytes_per_cycle: expected a positive number"),
    ("latency_cycles", 0, "ddr.latency_cycles: expected a positive integer, got 0"),
    ("latency_cycles", 2.5, "ddr.latency_cycles: expected a positive integer, got 2.5"),
])
def test_a_missing_or_bad_figure_is_refused(tmp_path: Path, key: str, value: object,
                                            message: str) -> None:
    with pytest.raises(StepvitError, match=re.escape(message)):
        load_board(board_with(tmp_path, **{key: value}))


def test_a_bad_ddr_section_is_refused_and_a_missing_one_only_where_needed(
        tmp_path: Path) -> None:
    fields = yaml.safe_load((BOARDS_DIR / "pynq-z2" / "board.yaml").read_text())
    (tmp_path / "board.yaml").write_text(yaml.safe_dump({**fields, "ddr": [8, 40]}))
    with pytest.raises(StepvitError, match="ddr: expected a mapping"):
        load_board(tmp_path)
    del fields["ddr"]
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    board = load_board(tmp_path)  # an overlay folder's older copy still loads
    assert board.ddr is None
    with pytest.raises(StepvitError, match="no 'ddr' section"):
        board.memory()
