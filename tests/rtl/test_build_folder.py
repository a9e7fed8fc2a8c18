"""The build folder's record of its design: written, read, adopted, refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.random_export import make_random_export
from stepvit.rtl.build_folder import (
    DEFAULT_LANES,
    DESIGN_FILE,
    board_for,
    build_design,
    default_build_dir,
    design_in,
    export_image_name,
    export_image_path,
    generator_fingerprint,
    image_stem_lanes,
    record_design,
)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    return load_export(make_random_export(
        tmp_path_factory.mktemp("export"), image_shape=[1, 4, 4], patch=2, dim=8, heads=2,
        depth=1, mlp_dim=16, num_classes=3, t_max=3, seed=4))


def test_the_record_says_the_export_the_lanes_the_board_and_the_generator(
        export: Export, tmp_path: Path) -> None:
    record = record_design(tmp_path / "b", export, 16, "pynq-z2")
    assert json.loads((tmp_path / "b" / DESIGN_FILE).read_text()) == record == {
        "config_hash": f"{export.config_hash:08x}",
        "weights_sha256": export.manifest["weights_sha256"], "lanes": 16, "board": "pynq-z2",
        "generator": generator_fingerprint()}
    assert design_in(tmp_path / "b", export, None) == record
    assert board_for(None, tmp_path / "b") == "pynq-z2"
    assert board_for("kv260", tmp_path / "b") == "kv260"


def test_an_empty_or_missing_folder_becomes_the_design(export: Export, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert design_in(tmp_path / "empty", export, None)["lanes"] == DEFAULT_LANES
    assert design_in(tmp_path / "new", export, 4)["lanes"] == 4
    assert json.loads((tmp_path / "new" / DESIGN_FILE).read_text())["board"] is None
    assert board_for(None, tmp_path / "new") == board_for(None, None) == "pynq-z2"


def test_without_build_the_default_folder_names_its_design(export: Export, tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder, lanes = build_design(export, None, None)
    assert (folder, lanes) == (default_build_dir(export, DEFAULT_LANES), DEFAULT_LANES)
    assert folder == Path("build") / "sim" / f"{export.config_hash:08x}-lanes{DEFAULT_LANES}"
    assert json.loads((folder / DESIGN_FILE).read_text())["lanes"] == DEFAULT_LANES
    assert build_design(export, 2, None)[1] == 2


@pytest.mark.parametrize(("record", "message"), [
    ("{", "design.json: not a design record"),
    ('{"lanes": 2}', "design.json: not a design record ('config_hash')"),
])
def test_an_unreadable_record_is_refused(export: Export, tmp_path: Path, record: str,
                                         message: str) -> None:
    (tmp_path / DESIGN_FILE).write_text(record)
    with pytest.raises(StepvitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        design_in(tmp_path, export, None)


def test_lanes_below_one_are_refused(export: Export, tmp_path: Path) -> None:
    with pytest.raises(StepvitError, match="^--lanes must be at least 1, got 0$"):
        design_in(tmp_path, export, 0)
    assert not (tmp_path / DESIGN_FILE).exists()


def test_an_exports_image_is_named_by_its_layout_the_stem_lanes_only_with_a_stem(
        export: Export, tmp_path: Path) -> None:
    """Without a stem the names are as they were; with one ``-stem<S>`` follows the lanes,
    so the images of two designs that differ only in their stem lanes never share a name."""
    assert export_image_name(32, 64) == "weights-lanes32-axi64.img"
    assert export_image_name(4, 128, {"membrane": 19, "logit": 13, "weight": 8}, True) == (
        "weights-lanes4-axi128-bitslogit13.membrane19-chunkmajor.img")
    assert export_image_name(32, 64, stem_lanes=12) == "weights-lanes32-stem12-axi64.img"
    assert export_image_name(32, 64, None, True, stem_lanes=8) == (
        "weights-lanes32-stem8-axi64-chunkmajor.img")
    assert export_image_name(32, 64, {"logit": 13}, True, stem_lanes=12) == (
        "weights-lanes32-stem12-axi64-bitslogit13-chunkmajor.img")
    assert export_image_name(32, 64, stem_lanes=8) != export_image_name(32, 64, stem_lanes=12)
    assert export_image_path(tmp_path, 32, 64, stem_lanes=12) == (
        tmp_path / "weights-lanes32-stem12-axi64.img")
    # the stem lanes that name an image: none without a stem, the core's where unrecorded
    assert image_stem_lanes(export.arch, 32, None) is None
    assert image_stem_lanes(export.arch, 32, 12) is None
    stem = {**export.arch, "stem": {"stages": [{"channels": 4}]}}
    assert image_stem_lanes(stem, 32, None) == 32
    assert image_stem_lanes(stem, 32, 12) == 12
