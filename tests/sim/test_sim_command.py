"""`stepvit sim`: its JSON, its exit status on a mismatch, and its argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stepvit.host import cli
from stepvit.model.export.errors import StepvitError
from stepvit.rtl import protocol
from stepvit.rtl.protocol import pack_images


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory, random_export) -> Path:
    return random_export(tmp_path_factory.mktemp("export"), seed=5)


def test_sim_prints_cycles_and_efficiency(export_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    status = cli.main(["sim", str(export_dir), "--images", "3", "--budget", "1,3", "--lanes",
                       "2", "--build", str(tmp_path / "build"), "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["mismatches"] == 0
    assert report == json.loads((out / "sim.json").read_text())
    assert report["images"] == 3 and report["lanes"] == 2 and report["image_source"] == "random"
    budget_one, budget_three = report["runs"]
    assert [budget_one["budget"], budget_three["budget"]] == [1, 3]
    for run in report["runs"]:
        assert len(run["cycles_per_image"]) == 3
        lower = sum(run["accumulates_per_image"]) / 3 / 2
        assert run["lower_bound_cycles"] == pytest.approx(lower)
        stream = run["stream_cycles_per_image"] * 3
        # images overlap: the stream is shorter than the images' latencies summed
        assert max(run["cycles_per_image"]) <= stream < sum(run["cycles_per_image"])
        assert run["efficiency"] == pytest.approx(lower * 3 / stream)
        assert 0 < run["efficiency"] <= 1
    assert sum(budget_one["ac_ops_per_image"]) <= sum(budget_three["ac_ops_per_image"])


def test_sim_exits_non_zero_on_a_mismatch(export_dir: Path, tmp_path: Path, capsys,
                                          monkeypatch) -> None:
    real = protocol.expected_packet

    def off_by_one(logits, predicted, spike_totals):
        return real([logits[0] + 1, *logits[1:]], predicted, spike_totals)

    monkeypatch.setattr(protocol, "expected_packet", off_by_one)
    status = cli.main(["sim", str(export_dir), "--images", "2", "--budget", "3", "--lanes", "2",
                       "--build", str(tmp_path / "build"), "--simulator", "icarus"])
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "build" / "sim.json").read_text())
    assert status == 1
    assert report["mismatches"] == 2
    assert report["runs"][0]["mismatched_images"] == [0, 1]
    assert report["runs"][0]["failures"][0].startswith("image 0 word 0 (logit 0) at cycle")


def test_bad_arguments_are_one_line(export_dir: Path, capsys) -> None:
    assert cli.main(["sim", str(export_dir), "--images", "0"]) == 2
    assert capsys.readouterr().err == "stepvit sim: error: --images must be at least 1, got 0\n"
    assert cli.main(["sim", str(export_dir / "missing")]) == 2
    assert capsys.readouterr().err.startswith("stepvit sim: error: ")


def test_image_frames_are_little_endian_and_zero_padded() -> None:
    images = np.arange(1, 6, dtype=np.uint8).reshape(1, 1, 1, 5)
    assert pack_images(images).tolist() == [[0x04030201, 0x00000005]]
    assert protocol.parse_packet([0xFFFFFFFF, 2, 0xFFFFFFFF, 17, 3, 4], 2) == {
        "logits": [-1, 2], "predicted": -1, "cycles": 17, "spike_totals": [3, 4]}


def test_missing_iverilog_is_a_clear_error(export_dir: Path, monkeypatch) -> None:
    from stepvit.model.export import load_export
    from stepvit.sim import runner

    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    with pytest.raises(StepvitError, match="iverilog not found on PATH"):
        runner.Simulation(load_export(export_dir), export_dir / "build", lanes=2)
