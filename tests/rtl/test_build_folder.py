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
    generator_fingerprint,
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
