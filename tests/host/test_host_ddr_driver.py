"""The pynq driver on a ddr overlay (one bitstream per shape), on the pynq double.

The double (``pynq_double.py``, ``weights="ddr"``) reads ``CONFIG_HASH`` as the shape
hash, resets the masks to every step active, checksums the ``allocate`` buffer at
``WEIGHTS_ADDR`` when told to load and fails a test that sends a frame before a load.
Checked: the register sequence of a load, the export's masks written after it (results
equal the golden model's only then: the golden model with itself, a driver check), a
swap to another export of the shape, and the refusals: another shape, a missing image, a
checksum other than the file's, an AXI error response, a load that never ends, an image of
another size than ``overlay.json`` says the design loads (before any load). With a
convolutional stem the image is the one of the overlay's stem lanes (``overlay.json``'s
``stem_lanes``, else its ``rtl_report``'s, else the core's lanes), never one of another
stem-lane count beside it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from pynq_double import BUFFER_BASE, FakeBoard, fake_pynq_module

from stepvit.host import backend_pynq
from stepvit.host.accelerator import open_accelerator
from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import DeviceTimeout, StepvitError
from stepvit.rtl.build_folder import export_image_path
from stepvit.rtl.protocol import CONTROL_LOAD_WEIGHTS, mask_register_values, offset
from stepvit.rtl.weight_image import image_checksum

LANES = 4  # what the double's LANES register reads
DATA_WIDTH = 64
TIMEOUT_S = 0.2


def write_image(export: Export, content: bytes | None = None) -> Path:
    """Write an image for ``export`` where the driver looks (the double checksums whatever
    bytes it holds; a real one comes from ``stepvit rtl --weights ddr``)."""
    path = export_image_path(export.path, LANES, DATA_WIDTH)
    if content is None:
        rng = np.random.default_rng(export.config_hash)
        content = rng.integers(0, 256, 1848, dtype=np.uint8).tobytes()
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Export]:
    """Seeds 0 and 2 of the tiny network (one shape) and seed 0 on 4x6 images (another)."""
    folder = tmp_path_factory.mktemp("ddr-exports")
    made = {"a": dict(seed=0), "b": dict(seed=2), "other": dict(seed=0, image_shape=[1, 4, 6])}
    loaded = {name: load_export(random_export(folder / name, **{"image_shape": [1, 4, 4],
                                                                **changes}))
              for name, changes in made.items()}
    for export in loaded.values():
        write_image(export)
    return loaded


@pytest.fixture
def export(exports: dict[str, Export]) -> Export:
    return exports["a"]


@pytest.fixture
def ddr_overlay(tmp_path: Path) -> Path:
    """An overlay folder with a stand-in .bit/.hwh and an overlay.json saying ``ddr``."""
    (tmp_path / "stepvit.bit").write_bytes(b"bitstream")
    (tmp_path / "stepvit.hwh").write_text("<hwh/>")
    (tmp_path / "overlay.json").write_text(json.dumps({"weights": "ddr",
                                                       "data_width": DATA_WIDTH}))
    return tmp_path


def ddr_double(export: Export, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    """Return the double as a ddr overlay built for ``export``'s shape, on the virtual
    clock, installed as the ``pynq`` module of a root login shell."""
    fake = FakeBoard(export, weights="ddr")
    monkeypatch.setitem(sys.modules, "pynq", fake_pynq_module(fake))
    monkeypatch.setenv("XILINX_XRT", "/usr")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(backend_pynq, "time", fake.clock)
    return fake


@pytest.fixture
def ddr_board(export: Export, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    """The double as a ddr overlay built for ``export``'s shape, on the virtual clock."""
    return ddr_double(export, monkeypatch)


def images_of(export: Export, count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, *export.arch["image_shape"]),
                                             dtype=np.uint8)


def writes(board: FakeBoard) -> list[tuple[str, int]]:
    names = {offset(name): name for name in ("WEIGHTS_ADDR", "CONTROL", "BATCH")}
    names.update({offset(f"MASK{i}"): f"MASK{i}" for i in range(8)})
    return [(names.get(access[1], hex(access[1])), access[2])
            for access in board.accesses if access[0] == "w"]


def test_opening_an_export_loads_its_image_then_writes_its_masks(export, ddr_board, ddr_overlay):
    board = ddr_board
    image = export_image_path(export.path, LANES, DATA_WIDTH).read_bytes()
    with open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S) as accel:
        assert accel.weights == "ddr"
        weights_buffer = board.allocated[-1]
        assert weights_buffer.physical_address == BUFFER_BASE + 2 * 0x10_0000
        masks = mask_register_values(export.timestep_mask)
        assert writes(board) == [("WEIGHTS_ADDR", weights_buffer.physical_address),
                                 ("CONTROL", CONTROL_LOAD_WEIGHTS),
                                 *((f"MASK{i}", value) for i, value in enumerate(masks))]
        assert board.loads == [image]
        reads = [access[1] for access in board.accesses if access[0] == "r"]
        assert offset("WEIGHTS_CHECKSUM_LO") in reads and offset("WEIGHTS_CHECKSUM_HI") in reads
        assert any(value != 2**export.t_max - 1 for value in masks)  # the mask matters
        result = accel.infer(images_of(export))
    expected = open_accelerator("golden", export).infer(images_of(export))
    assert np.array_equal(result.logits, expected.logits)
    assert all(buffer.freed for buffer in board.allocated)


def test_a_swap_loads_the_other_exports_image_on_the_same_overlay(exports, ddr_board,
                                                                 ddr_overlay):
    board = ddr_board
    for name in ("a", "b", "a"):
        export = exports[name]
        with open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S):
            pass
        assert board.loads[-1] == export_image_path(export.path, LANES, DATA_WIDTH).read_bytes()
        masks = mask_register_values(export.timestep_mask)
        assert [board.registers[offset(f"MASK{i}")] for i in range(len(masks))] == masks
    assert len(board.loads) == 3 and board.loads[0] != board.loads[1]


def test_an_export_of_another_shape_is_refused(exports, ddr_board, ddr_overlay):
    export, other = exports["a"], exports["other"]
    with pytest.raises(StepvitError) as error:
        open_accelerator("pynq", other, overlay=ddr_overlay, timeout_s=TIMEOUT_S)
    assert str(error.value) == (
        f"the ddr overlay was built for shape hash 0x{export.shape_hash:08x}, but the export "
        f"{other.path} has shape hash 0x{other.shape_hash:08x}: build an overlay for that "
        f"shape (stepvit rtl EXPORT --build B --weights ddr, then stepvit overlay EXPORT "
        f"--build B)")
    assert not ddr_board.loads and not ddr_board.allocated


def test_a_missing_image_is_refused_with_the_command_that_makes_it(export, ddr_board,
                                                                   ddr_overlay):
    path = export_image_path(export.path, LANES, DATA_WIDTH)
    saved = path.read_bytes()
    path.unlink()
    try:
        with pytest.raises(StepvitError) as error:
            open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S)
    finally:
        path.write_bytes(saved)
    message = str(error.value)
    assert message.startswith(f"{path} is missing: a ddr overlay loads the export's weight "
                              f"image; make it with `stepvit rtl {export.path} --build BUILD "
                              f"--weights ddr`, BUILD the overlay's ddr build (4 lanes, "
                              f"64-bit AXI)")
    assert "\n" not in message
    assert not ddr_board.loads
    assert all(buffer.freed for buffer in ddr_board.allocated)


def test_a_checksum_other_than_the_files_is_refused(export, ddr_board, ddr_overlay):
    ddr_board.checksum_flip = 1 << 40
    expected = image_checksum(export_image_path(export.path, LANES, DATA_WIDTH).read_bytes())
    with pytest.raises(StepvitError, match=(
            rf"checksum of the loaded weights is 0x{expected ^ 1 << 40:016x}, .* has "
            rf"0x{expected:016x}: the image was corrupted")):
        open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S)
    assert all(buffer.freed for buffer in ddr_board.allocated)


def test_an_axi_error_response_is_refused(export, ddr_board, ddr_overlay):
    ddr_board.load_response_error = True
    with pytest.raises(StepvitError, match=r"ended in an AXI error response \(STATUS 0x8\): "
                                           r"the accelerator's m_axi port cannot read"):
        open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S)


def test_a_load_that_never_ends_times_out(export, ddr_board, ddr_overlay):
    ddr_board.load_never_ends = True
    with pytest.raises(DeviceTimeout, match=r"did not finish within 0.2 s \(STATUS 0x10\)"):
        open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S)
    assert all(buffer.freed for buffer in ddr_board.allocated)


def test_a_ddr_overlay_without_its_description_is_named(export, ddr_board, overlay_dir):
    """overlay.json not copied: the CONFIG_HASH is the shape hash, which the message says."""
    with pytest.raises(StepvitError, match=r"is the export's shape hash: a ddr overlay, but no "
                                           r"overlay.json saying so beside its .bit"):
        open_accelerator("pynq", export, overlay=overlay_dir, timeout_s=TIMEOUT_S)


def test_a_rom_overlay_loads_nothing(export, board, overlay_dir):
    """The rom path as before: no weight registers touched, the masks only on a budget."""
    with open_accelerator("pynq", export, overlay=overlay_dir) as accel:
        assert accel.weights == "rom"
        accel.infer(images_of(export, 1))
    assert not board.loads
    assert not [access for access in board.accesses
                if access[0] == "w" and access[1] in (offset("WEIGHTS_ADDR"), offset("CONTROL"))]


@pytest.fixture(scope="module")
def width_pair(tmp_path_factory: pytest.TempPathFactory, random_export) -> tuple[Export, Export]:
    """Seeds 1 and 4 of the tiny network: one shape, seed 4's membrane and logit 1 bit wider."""
    folder = tmp_path_factory.mktemp("width-exports")
    return tuple(load_export(random_export(folder / f"seed{seed}", image_shape=[1, 4, 4],
                                           seed=seed))
                 for seed in (1, 4))


@pytest.mark.parametrize("margin", [0, 1])
def test_an_export_whose_widths_do_not_fit_the_overlays_is_refused(
        width_pair, margin: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stepvit.model.export import design_widths
    from stepvit.rtl.build_folder import image_widths

    narrow, wide = width_pair
    fake = FakeBoard(narrow, weights="ddr")
    monkeypatch.setitem(sys.modules, "pynq", fake_pynq_module(fake))
    monkeypatch.setenv("XILINX_XRT", "/usr")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(backend_pynq, "time", fake.clock)
    widths = design_widths(narrow.bit_widths, margin)
    (tmp_path / "stepvit.bit").write_bytes(b"bitstream")
    (tmp_path / "stepvit.hwh").write_text("<hwh/>")
    (tmp_path / "overlay.json").write_text(json.dumps({"weights": "ddr", "data_width": DATA_WIDTH,
                                                       "bit_widths": widths}))
    export_image_path(wide.path, LANES, DATA_WIDTH,
                      image_widths(wide.bit_widths, widths)).write_bytes(bytes(64))
    if margin == 0:
        with pytest.raises(StepvitError) as error:
            open_accelerator("pynq", wide, overlay=tmp_path, timeout_s=TIMEOUT_S)
        message = str(error.value)
        assert "\n" not in message
        assert "membrane 19 > 18, logit 13 > 12" in message and "--width-margin" in message
        assert fake.loads == []
    else:
        with open_accelerator("pynq", wide, overlay=tmp_path, timeout_s=TIMEOUT_S) as accel:
            assert accel.weights == "ddr"
        assert fake.loads == [bytes(64)]


# --- the image's size and, with a convolutional stem, its stem lanes ---

#: The fixture's images: the size the tiny network's image has at 4 lanes and 64-bit beats.
IMAGE_BYTES = 1848


@pytest.mark.parametrize("described", [
    {"weight_image_bytes": IMAGE_BYTES},
    # an overlay.json written before it said weight_image_bytes: its rtl_report's image
    {"rtl_report": {"weight_image": {"file": "weights.img", "bytes": IMAGE_BYTES}}},
], ids=["weight_image_bytes", "rtl_report"])
def test_an_image_of_another_size_is_refused_before_its_load(
        export, ddr_board, ddr_overlay, described: dict) -> None:
    """A file packed for another design's layout (here one word short) is named, with the
    sizes and the command that rewrites it, rather than loaded into an AXI error."""
    (ddr_overlay / "overlay.json").write_text(json.dumps(
        {"weights": "ddr", "data_width": DATA_WIDTH, **described}))
    path = export_image_path(export.path, LANES, DATA_WIDTH)
    saved = path.read_bytes()
    assert len(saved) == IMAGE_BYTES
    with open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S):
        pass  # the right size loads
    assert ddr_board.loads == [saved]
    path.write_bytes(saved[:-8])
    try:
        with pytest.raises(StepvitError) as error:
            open_accelerator("pynq", export, overlay=ddr_overlay, timeout_s=TIMEOUT_S)
    finally:
        path.write_bytes(saved)
    assert str(error.value) == (
        f"{path} holds {IMAGE_BYTES - 8} bytes, but this ddr overlay's design loads a weight "
        f"image of {IMAGE_BYTES} bytes: the file was packed for another design (other lanes, "
        f"stem lanes or bit widths); rewrite it with `stepvit rtl {export.path} --build BUILD "
        f"--weights ddr`, BUILD the overlay's ddr build (4 lanes, 64-bit AXI), which writes "
        f"the export's image for that build's design")
    assert ddr_board.loads == [saved]  # nothing more loaded
    assert all(buffer.freed for buffer in ddr_board.allocated)


#: A convolutional stem (that of tests/sim/test_sim_ddr_stem.py) on 9x9 images.
STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 4},
                   {"channels": 8, "pool": "after"}], "rpe": True}


@pytest.fixture(scope="module")
def stem_export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    """A tiny export with a stem and its images for 4 core lanes + 3 and + 2 stem lanes."""
    from stepvit.rtl.design_image import design_image

    export = load_export(random_export(tmp_path_factory.mktemp("stem") / "stem",
                                       image_shape=[1, 9, 9], dim=8, stem=STEM))
    for stem_lanes in (2, 3):
        image = design_image(export, lanes=LANES, data_width=DATA_WIDTH, stem_lanes=stem_lanes)
        export_image_path(export.path, LANES, DATA_WIDTH,
                          stem_lanes=stem_lanes).write_bytes(image.image)
    return export


@pytest.fixture
def stem_board(stem_export: Export, monkeypatch: pytest.MonkeyPatch) -> FakeBoard:
    return ddr_double(stem_export, monkeypatch)


def stem_overlay(folder: Path, **described: object) -> Path:
    (folder / "stepvit.bit").write_bytes(b"bitstream")
    (folder / "stepvit.hwh").write_text("<hwh/>")
    (folder / "overlay.json").write_text(json.dumps({"weights": "ddr", "data_width": DATA_WIDTH,
                                                     **described}))
    return folder


def test_a_stem_overlay_loads_the_image_of_its_own_stem_lanes(stem_export, stem_board,
                                                               tmp_path: Path) -> None:
    """4 + 2 stem lanes: the 4 + 2 image, never the 4 + 3 one beside it (another size)."""
    two, three = (export_image_path(stem_export.path, LANES, DATA_WIDTH, stem_lanes=stem_lanes)
                  for stem_lanes in (2, 3))
    assert (two.name, three.name) == ("weights-lanes4-stem2-axi64.img",
                                      "weights-lanes4-stem3-axi64.img")
    assert len(two.read_bytes()) != len(three.read_bytes())
    overlay = stem_overlay(tmp_path, stem_lanes=2, weight_image_bytes=len(two.read_bytes()))
    with open_accelerator("pynq", stem_export, overlay=overlay, timeout_s=TIMEOUT_S) as accel:
        assert accel.stem_lanes() == 2
        assert accel.weight_image_path() == two
    assert stem_board.loads == [two.read_bytes()]
    saved = two.read_bytes()
    try:
        two.unlink()  # no 4 + 2 image: missing, not the 4 + 3 one taken for it
        with pytest.raises(StepvitError) as error:
            open_accelerator("pynq", stem_export, overlay=overlay, timeout_s=TIMEOUT_S)
        assert str(error.value).startswith(
            f"{two} is missing: a ddr overlay loads the export's weight image; make it with "
            f"`stepvit rtl {stem_export.path} --build BUILD --weights ddr`, BUILD the "
            f"overlay's ddr build (4 lanes + 2 stem lanes, 64-bit AXI)")
        two.write_bytes(three.read_bytes())  # the 4 + 3 image under the 4 + 2 name
        with pytest.raises(StepvitError) as error:
            open_accelerator("pynq", stem_export, overlay=overlay, timeout_s=TIMEOUT_S)
        message = str(error.value)
        assert message.startswith(f"{two} holds {len(three.read_bytes())} bytes, but this ddr "
                                  f"overlay's design loads a weight image of {len(saved)} bytes")
        assert "(4 lanes + 2 stem lanes, 64-bit AXI)" in message and "\n" not in message
    finally:
        two.write_bytes(saved)
    assert stem_board.loads == [saved]


@pytest.mark.parametrize(("described", "stem_lanes"), [
    ({"stem_lanes": 3}, 3),
    ({"rtl_report": {"stem_lanes": 3}}, 3),  # overlay.json before it said stem_lanes
    ({}, LANES),  # nothing recorded: the core's lanes (the LANES register)
])
def test_a_stem_overlays_stem_lanes_come_from_its_description(
        stem_export, stem_board, tmp_path: Path, described: dict, stem_lanes: int) -> None:
    overlay = stem_overlay(tmp_path, **described)
    path = export_image_path(stem_export.path, LANES, DATA_WIDTH, stem_lanes=stem_lanes)
    if stem_lanes == LANES:
        with pytest.raises(StepvitError, match=rf"^{re.escape(str(path))} is missing: .* "
                                               rf"\(4 lanes \+ 4 stem lanes, 64-bit AXI\)"):
            open_accelerator("pynq", stem_export, overlay=overlay, timeout_s=TIMEOUT_S)
        assert stem_board.loads == []
        return
    with open_accelerator("pynq", stem_export, overlay=overlay, timeout_s=TIMEOUT_S) as accel:
        assert accel.weight_image_path() == path
    assert stem_board.loads == [path.read_bytes()]
