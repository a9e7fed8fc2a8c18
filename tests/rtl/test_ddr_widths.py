"""A ddr design's widths fit rather than match: ``--width-margin`` and its refusals.

Two random exports of one shape whose proven widths differ by one bit (the tiny network on
4x4 images: seed 1 has membrane 18 and logit 12, seed 4 membrane 19 and logit 13, the rest
equal). A design built from seed 1 with a margin of 1 serves seed 4 (under Icarus:
tests/sim/test_sim_ddr_widths.py); with no margin the build folder refuses seed 4, naming
the widths; a margin of 0 is the design of no option, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepvit.host import cli
from stepvit.model.export import Export, design_widths, load_export, widths_fit
from stepvit.rtl.build_folder import export_image_path, image_widths
from stepvit.rtl.design_image import design_image
from stepvit.rtl.generate import to_verilog
from stepvit.rtl.top import StepvitAccel

LANES = 4
#: Seeds of the tiny export: the design's (narrower) and the one whose widths exceed it by 1.
NARROW, WIDE = 1, 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, random_export) -> tuple[Export, Export]:
    folder = tmp_path_factory.mktemp("width-exports")
    return tuple(load_export(random_export(folder / f"seed{seed}", image_shape=[1, 4, 4],
                                           seed=seed))
                 for seed in (NARROW, WIDE))


def rtl(export: Export, build: Path, *extra: str) -> int:
    return cli.main(["rtl", str(export.path), "--build", str(build), "--weights", "ddr",
                     "--lanes", str(LANES), *extra])


def test_the_pair_shares_a_shape_and_differs_by_one_bit(pair: tuple[Export, Export]) -> None:
    narrow, wide = pair
    assert narrow.shape_hash == wide.shape_hash
    assert widths_fit(wide.bit_widths, narrow.bit_widths) == ["membrane 19 > 18",
                                                               "logit 13 > 12"]
    assert widths_fit(narrow.bit_widths, wide.bit_widths) == []
    assert widths_fit(wide.bit_widths, design_widths(narrow.bit_widths, 1)) == []


def test_the_margin_widens_every_width_but_the_weights() -> None:
    widths = {"weight": 8, "embed_current": 17, "stream": 11, "current": 10,
              "attention": 6, "membrane": 18, "logit": 12}
    assert design_widths(widths, 0) == widths
    assert design_widths(widths, 2) == {key: value + (0 if key == "weight" else 2)
                                        for key, value in widths.items()}
    with pytest.raises(ValueError, match="beyond the hardware's 32"):
        design_widths(widths, 15)
    with pytest.raises(ValueError, match="non-negative"):
        design_widths(widths, -1)


def test_margin_zero_is_the_design_of_no_option(pair: tuple[Export, Export]) -> None:
    narrow = pair[0]
    plain = to_verilog(StepvitAccel(narrow, lanes=LANES, weights="ddr"))
    zero = to_verilog(StepvitAccel(narrow, lanes=LANES, weights="ddr",
                                   widths=design_widths(narrow.bit_widths, 0)))
    assert zero == plain
    wider = to_verilog(StepvitAccel(narrow, lanes=LANES, weights="ddr",
                                    widths=design_widths(narrow.bit_widths, 1)))
    assert wider != plain
    assert (design_image(narrow, lanes=LANES).image
            != design_image(narrow, lanes=LANES, widths=design_widths(narrow.bit_widths, 1)).image)


def test_a_wider_export_is_refused_by_a_build_without_margin(
        pair: tuple[Export, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    narrow, wide = pair
    build = tmp_path / "build"
    assert rtl(narrow, build) == 0
    capsys.readouterr()
    assert rtl(wide, build) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1
    assert "membrane 19 > 18, logit 13 > 12" in errors[0] and "--width-margin" in errors[0]


def test_a_build_with_margin_one_serves_the_wider_export(
        pair: tuple[Export, Export], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    narrow, wide = pair
    build = tmp_path / "build"
    assert rtl(narrow, build, "--width-margin", "1") == 0
    widths = design_widths(narrow.bit_widths, 1)
    record = json.loads((build / "design.json").read_text())
    assert record["bit_widths"] == widths
    assert json.loads((build / "report.json").read_text())["parameters"]["bit_widths"] == widths
    verilog = (build / "stepvit_accel.v").read_text()
    capsys.readouterr()
    assert rtl(wide, build) == 0
    assert json.loads(capsys.readouterr().out)["reused"] is True
    assert (build / "stepvit_accel.v").read_text() == verilog
    image = design_image(wide, lanes=LANES, widths=widths)
    assert (build / "weights.img").read_bytes() == image.image
    path = export_image_path(wide.path, LANES, 64, image_widths(wide.bit_widths, widths))
    assert path.read_bytes() == image.image and "-bits" in path.name


def test_a_rom_design_refuses_the_margin(pair: tuple[Export, Export], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rtl", str(pair[0].path), "--build", str(tmp_path / "b"),
                     "--width-margin", "1"]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "--width-margin" in errors[0] and "--weights ddr" in errors[0]
