"""``stepvit demo``: option checks, the reuse rule, and (slow) the whole chain on a tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from stepvit.host.cli import main
from stepvit.host.demo import _export_is_current
from stepvit.model.config import DEFAULT_CONFIG


def test_demo_refuses_bad_counts(capsys: pytest.CaptureFixture):
    assert main(["demo", "--lanes", "0"]) == 2
    assert main(["demo", "--bench-images", "0"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["stepvit demo: error: --lanes must be at least 1",
                      "stepvit demo: error: --bench-images must be at least 1"]


def test_export_is_reused_only_when_complete_valid_and_newer(tmp_path: Path, random_export):
    run = tmp_path / "run"
    export_dir = random_export(run / "export", t_max=2)
    assert not _export_is_current(run, export_dir)  # no golden vectors
    (export_dir / "golden_vectors.npz").write_bytes(b"")
    assert _export_is_current(run, export_dir)
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(b"")
    manifest_time = (export_dir / "manifest.yaml").stat().st_mtime
    os.utime(checkpoint, (manifest_time + 10, manifest_time + 10))
    assert not _export_is_current(run, export_dir)  # trained again since the export
    os.utime(checkpoint, (manifest_time - 10, manifest_time - 10))
    assert _export_is_current(run, export_dir)
    (export_dir / "weights.npz").write_bytes(b"changed")
    assert not _export_is_current(run, export_dir)  # checksum mismatch


@pytest.mark.slow
def test_demo_runs_the_whole_chain_on_a_tiny_model(tmp_path: Path, capsys):
    config = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    config["model"].update(dim=8, heads=2, depth=1, mlp_dim=16, t_max=2)
    stem = config["model"].get("stem")
    if stem:  # the default's stem, narrowed to the tiny width: stage channels 4, ..., 8
        stem["stages"][-1]["channels"] = 8
        for stage in stem["stages"][:-1]:
            stage["channels"] = 4
    config["training"]["epochs"] = 1
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run, build = tmp_path / "run", tmp_path / "build"
    argv = ["demo", "--config", str(config_path), "--run", str(run), "--build", str(build),
            "--lanes", "2", "--sim-images", "2", "--bench-images", "3"]
    assert main(argv) == 0
    summary = json.loads((build / "demo.json").read_text())
    assert set(summary["seconds_per_step"]) == {"train", "export", "rtl", "sim", "bench",
                                                "synth"}
    bench = json.loads((build / "bench" / "bench.json").read_text())
    assert [row["budget"] for row in bench["rows"]] == [1, 2]
    assert all(row["mismatches"] == 0 for row in bench["rows"])
    # the synth step: Yosys's report of this tiny design (its 2 lanes, the default board)
    out = capsys.readouterr().out
    assert "fits the budget: yes" in out and "routing NOT included" in out
    report = json.loads((build / "synth_pynq-z2.json").read_text())
    assert report["used"]["lut"] > 0 and report["used"]["ff"] > 0
    assert report["multiplier_cells"] == 0 and report["used"]["dsp"] == 0
    assert report["multiplier_free"]
    assert report["design"]["lanes"] == 2 and report["board"] == "pynq-z2"
    assert report["synthesized"] == "stepvit_accel.il"
    timing = report["timing"]
    assert timing["path_ps"] > 0 and timing["logic_levels"] > 0
    assert timing["fmax_mhz"] == pytest.approx(1e6 / timing["path_ps"], abs=0.1)
    assert "routing not included" in timing["estimate"]
    assert not (build / "yosys_mapped.json").exists()
    assert main(argv + ["--bench-only"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert set(json.loads((build / "bench_summary.json").read_text())["seconds_per_step"]) == {
        "bench"}
