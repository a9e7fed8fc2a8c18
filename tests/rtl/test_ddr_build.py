"""A ``--weights ddr`` build folder is keyed by the shape hash: one bitstream per shape.

``stepvit rtl EXPORT2 --build B --weights ddr`` on a folder holding a ddr design of
EXPORT2's shape keeps its Verilog and writes EXPORT2's image (the build's current
``weights.img``, and ``EXPORT2/weights-lanes<P>-axi<W>.img`` for the host, ``-stem<S>``
after the lanes with a stem); an export of another shape is refused in one line naming
both shape hashes. The exports are the tiny random network at seeds 0 and 2 (equal proven
bit widths: one shape) and seed 0 on 4x6 images (another shape).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host import cli
from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.build_folder import design_in, export_image_path
from stepvit.rtl.design_image import design_image

LANES = 4


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Export]:
    folder = tmp_path_factory.mktemp("exports")
    made = {"a": dict(seed=0), "b": dict(seed=2), "other": dict(seed=0, image_shape=[1, 4, 6])}
    return {name: load_export(random_export(folder / name, **{"image_shape": [1, 4, 4],
                                                               **changes}))
            for name, changes in made.items()}


def rtl(export: Export, build: Path, *extra: str) -> int:
    return cli.main(["rtl", str(export.path), "--build", str(build), "--weights", "ddr",
                     *extra])


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_second_export_of_the_shape_reuses_the_verilog_and_writes_its_image(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = exports["a"], exports["b"]
    assert first.shape_hash == second.shape_hash and first.config_hash != second.config_hash
    build = tmp_path / "build"
    assert rtl(first, build, "--lanes", str(LANES)) == 0
    verilog = (build / "stepvit_accel.v").read_text()
    record = json.loads((build / "design.json").read_text())
    assert (record["weights"], record["shape_hash"]) == ("ddr", f"{first.shape_hash:08x}")
    assert (record["data_width"], record["max_burst"]) == (64, 16)
    capsys.readouterr()
    # Marked so that a regeneration would show: a reused build keeps its Verilog file.
    (build / "stepvit_accel.v").write_text(verilog + "// kept\n")
    assert rtl(second, build) == 0  # the folder's lanes, no --lanes needed
    printed = json.loads(capsys.readouterr().out)
    assert printed["reused"] is True
    assert (build / "stepvit_accel.v").read_text() == verilog + "// kept\n"
    for export in (first, second):
        image = design_image(export, lanes=LANES, data_width=64)
        assert export_image_path(export.path, LANES, 64).read_bytes() == image.image
    image = design_image(second, lanes=LANES, data_width=64)
    assert (build / "weights.img").read_bytes() == image.image
    report = json.loads((build / "report.json").read_text())
    assert report["config_hash"] == f"{second.config_hash:08x}"
    assert report["weight_image"]["checksum"] == f"{image.checksum:016x}"
    assert printed["weight_image_checksum"] == f"{image.checksum:016x}"
    assert json.loads((build / "design.json").read_text())["config_hash"] == (
        f"{second.config_hash:08x}")


def test_another_shape_is_refused_naming_both_shape_hashes(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, other = exports["a"], exports["other"]
    assert first.shape_hash != other.shape_hash
    build = tmp_path / "build"
    assert rtl(first, build, "--lanes", str(LANES)) == 0
    verilog = (build / "stepvit_accel.v").read_text()
    capsys.readouterr()
    assert rtl(other, build) == 2
    assert error_lines(capsys) == [
        f"stepvit rtl: error: {build} holds a ddr design of shape hash {first.shape_hash:08x}; "
        f"{other.path} has shape hash {other.shape_hash:08x} (one bitstream per shape: use "
        f"another --build for that shape)"]
    assert (build / "stepvit_accel.v").read_text() == verilog
    assert not export_image_path(other.path, LANES, 64).exists()
    assert rtl(first, build, "--lanes", "2") == 2
    assert error_lines(capsys) == [
        f"stepvit rtl: error: {build} holds a 4-lane ddr design of shape "
        f"{first.shape_hash:08x}; --lanes 2 conflicts (drop --lanes or use another --build)"]
    with pytest.raises(StepvitError, match="holds a ddr design .* would overwrite with a rom"):
        design_in(build, first, None)


def test_a_rom_build_behaves_as_before(exports: dict[str, Export], tmp_path: Path) -> None:
    """rom: the folder is rewritten for whichever export, as before (no shape key)."""
    build = tmp_path / "build"
    for export in (exports["a"], exports["other"]):
        assert cli.main(["rtl", str(export.path), "--build", str(build), "--lanes", "2"]) == 0
        record = json.loads((build / "design.json").read_text())
        assert record["config_hash"] == f"{export.config_hash:08x}"
        assert "weights" not in record and not (build / "weights.img").exists()


def test_a_design_of_older_generator_code_is_generated_again_as_recorded(
        exports: dict[str, Export], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """New generator code: the swap command (`rtl EXPORT2 --build B --weights ddr`, no
    other option) generates the folder's design again, its lanes, widths, streaming and
    tiles, not the options' defaults."""
    import stepvit.rtl.build_folder as build_folder

    first, second = exports["a"], exports["b"]
    build = tmp_path / "build"
    assert rtl(first, build, "--lanes", "2", "--width-margin", "1", "--stream-weights",
               "--tile-words", "16") == 0
    held = json.loads((build / "design.json").read_text())
    verilog = (build / "stepvit_accel.v").read_text()
    (build / "stepvit_accel.v").write_text(verilog + "// old\n")
    capsys.readouterr()
    monkeypatch.setattr(build_folder, "generator_fingerprint", lambda: "f" * 16)
    assert rtl(second, build) == 0
    assert "generating it again as recorded (2 lanes)" in capsys.readouterr().err
    record = json.loads((build / "design.json").read_text())
    assert record["generator"] == "f" * 16 and record["config_hash"] == f"{second.config_hash:08x}"
    for key in ("lanes", "bit_widths", "stream_weights", "tile_words", "shape_hash"):
        assert record[key] == held[key], key
    assert (build / "stepvit_accel.v").read_text() == verilog  # generated again, the same
