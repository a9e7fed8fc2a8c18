"""The budget benchmark: rows, mismatch counting, golden vectors, and the bench/run commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stepvit.host.accelerator import InferenceResult, open_accelerator
from stepvit.host.backend_golden import GoldenAccelerator
from stepvit.host.bench import (
    GoldenReference,
    Reference,
    VectorsReference,
    count_mismatches,
    format_table,
    run_bench,
)
from stepvit.host.cli import main
from stepvit.model.export import load_export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.vectors import load_golden_vectors
from stepvit.model.export_cli import write_golden_vectors_of
from stepvit.model.golden import GoldenModel

VECTOR_IMAGES = 6


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export):
    directory = random_export(tmp_path_factory.mktemp("export") / "tiny", seed=5)
    export = load_export(directory)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(VECTOR_IMAGES, 1, 4, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, size=VECTOR_IMAGES)
    write_golden_vectors_of(directory / "golden_vectors.npz", GoldenModel(export),
                         torch.from_numpy(images), torch.from_numpy(labels))
    return export


def test_count_mismatches_sees_one_changed_value():
    reference = Reference(logits=np.zeros((3, 2), np.int64), predicted=np.zeros(3, np.int64),
                          spike_totals=np.ones((3, 4), np.int64))
    result = InferenceResult(logits=reference.logits.copy(), predicted=reference.predicted.copy(),
                             cycles=None, spike_totals=reference.spike_totals.copy())
    assert count_mismatches(result, reference) == 0
    result.spike_totals[2, 3] += 1
    assert count_mismatches(result, reference) == 1
    result.logits[0, 1] -= 1
    result.predicted[2] = 1
    assert count_mismatches(result, reference) == 2


def test_golden_bench_rows_follow_the_budget(export):
    vectors = load_golden_vectors(export)
    reference = GoldenReference(export, vectors.images, vectors.labels)
    with open_accelerator("golden", export) as accel:
        rows = run_bench(accel, vectors.images[:4], [1, 2, 3], reference, clock_mhz=100.0,
                         lanes=4, labels=vectors.labels[:4])
    assert [row["budget"] for row in rows] == [1, 2, 3]
    assert all(row["mismatches"] == 0 for row in rows)
    assert all(row["cycles_per_image"] is None for row in rows)
    ac_ops = [row["ac_ops_per_image"] for row in rows]
    assert ac_ops == sorted(ac_ops) and ac_ops[0] < ac_ops[-1]
    golden_accuracy = float((vectors.outputs["predicted"][0] == vectors.labels).mean())
    assert rows[0]["accuracy"] == golden_accuracy and rows[0]["accuracy_images"] == 6
    row = rows[2]
    assert row["energy_uj"] == pytest.approx((4.6 * row["mac_ops_per_image"]
                                              + 0.9 * row["ac_ops_per_image"]) * 1e-6)
    assert row["lower_bound_cycles"] == pytest.approx(
        (row["ac_ops_per_image"] + row["embed_ac_ops_per_image"]) / 4)
    assert "budget" in format_table(rows).splitlines()[0]
    assert "lat_us:" not in format_table(rows)  # no clock: no legend of the cycles


class ClockedGolden(GoldenAccelerator):
    """The golden backend with made-up cycles: latencies 100, 150, ..., and a stream."""

    stream: int | None = None

    def _infer(self, images):
        result = super()._infer(images)
        result.cycles = 100 + 50 * np.arange(len(images), dtype=np.int64)
        result.stream_cycles = self.stream
        return result


@pytest.mark.parametrize("stream", [None, 240])
def test_bench_takes_the_stream_cycles_as_the_throughput(export, stream):
    vectors = load_golden_vectors(export)
    reference = GoldenReference(export, vectors.images, vectors.labels)
    accel = ClockedGolden(export)
    accel.stream = stream
    (row,) = run_bench(accel, vectors.images[:4], [3], reference, clock_mhz=100.0, lanes=4)
    latency = (100 + 150 + 200 + 250) / 4
    # images overlap when streamed: the stream's cycles per image is the throughput; an
    # image's own cycles are its latency
    cycles = latency if stream is None else stream / 4
    assert row["cycles_per_image"] == pytest.approx(cycles)
    assert row["latency_cycles"] == pytest.approx(latency)
    assert row["latency_us"] == pytest.approx(latency / 100.0)
    # the first image waits behind none: the latency of one image on an idle accelerator
    assert row["idle_latency_cycles"] == 100
    assert row["idle_latency_us"] == pytest.approx(1.0)
    assert row["images_per_s"] == pytest.approx(100e6 / cycles)
    assert row["efficiency"] == pytest.approx(row["lower_bound_cycles"] / cycles)
    # the table says which the cycles are
    legend = ("an image's share of the images streamed back to back" if stream
              else "an image's mean latency (the backend gave no stream clock)")
    assert f"cycles: {legend}" in format_table([row])


def test_vectors_reference_matches_the_golden_model(export):
    vectors = load_golden_vectors(export)
    reference = VectorsReference(vectors, export)
    golden = GoldenReference(export)
    for budget in (1, 3):
        stored, computed = reference.expected(budget, vectors.images[:3]), golden.expected(
            budget, vectors.images[:3])
        assert np.array_equal(stored.logits, computed.logits)
        assert np.array_equal(stored.spike_totals, computed.spike_totals)
        for key in ("mac_ops", "ac_ops", "embed_ac_ops", "dense_ac_ops"):
            assert np.array_equal(stored.work[key], computed.work[key]), key
    with pytest.raises(StepvitError, match="not the golden vectors' first images"):
        reference.expected(1, vectors.images[1:3])


def test_bench_command_on_a_board_checks_the_golden_vectors(export, board, overlay_dir,
                                                            tmp_path: Path, capsys):
    out = tmp_path / "bench"
    status = main(["bench", str(export.path), "--backend", "pynq", "--overlay",
                   str(overlay_dir), "--images", "4", "--budgets", "1,3", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["backend"] == "pynq" and report["clock_mhz"] == 100.0
    assert [row["mismatches"] for row in report["rows"]] == [0, 0]
    # the fake's packets say 1000 cycles and more; its BUSY_CYCLES rises by half of each
    assert all(row["latency_cycles"] >= 1000 for row in report["rows"])
    assert all(row["cycles_per_image"] == pytest.approx(row["latency_cycles"] // 2, abs=1)
               for row in report["rows"])
    assert all(row["lower_bound_cycles"] > 0 for row in report["rows"])
    assert report["rows"][0]["latency_us"] == pytest.approx(
        report["rows"][0]["latency_cycles"] / 100.0)
    assert "mismatch" in capsys.readouterr().out
    assert all(buffer.freed for buffer in board.allocated)


def test_run_command_fails_on_a_corrupted_board(export, board, overlay_dir, tmp_path: Path,
                                                capsys):
    board.corrupt_logit = True
    status = main(["run", "--board", "pynq-z2", str(export.path), "--overlay", str(overlay_dir),
                   "--images", "3", "--out", str(tmp_path / "run")])
    assert status == 1
    report = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert [row["mismatches"] for row in report["rows"]] == [3, 3, 3]
    assert "9 image results differ from the golden model" in capsys.readouterr().err


def test_bench_command_errors_are_one_line(export, tmp_path: Path, capsys):
    assert main(["bench", str(tmp_path / "nowhere"), "--backend", "golden"]) == 2
    assert main(["bench", str(export.path), "--backend", "pynq"]) == 2
    assert main(["bench", str(export.path), "--backend", "golden", "--budgets", "9"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("stepvit bench: error:") for line in errors)
    assert "needs --overlay" in errors[1] and "1..3" in errors[2]


def test_bench_command_on_the_golden_backend(export, tmp_path: Path):
    out = tmp_path / "golden"
    assert main(["bench", str(export.path), "--backend", "golden", "--images", "5",
                 "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert [row["budget"] for row in report["rows"]] == [1, 2, 3]
    assert (out / "bench.png").stat().st_size > 0


@pytest.mark.slow
def test_sim_backend_matches_golden(export, tmp_path: Path):
    vectors = load_golden_vectors(export)
    with open_accelerator("sim", export, lanes=2, build_dir=tmp_path / "sim") as accel:
        rows = run_bench(accel, vectors.images[:3], [1, 3], VectorsReference(vectors, export),
                         clock_mhz=100.0, lanes=2)
    assert [row["mismatches"] for row in rows] == [0, 0]
    assert all(row["cycles_per_image"] > 0 for row in rows)


def test_plot_is_skipped_with_a_note_without_matplotlib(tmp_path: Path, monkeypatch, capsys):
    from stepvit.host.plot import plot_bench

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    report = {"rows": [], "backend": "pynq", "clock_mhz": 100.0}
    assert plot_bench(report, tmp_path / "bench.png") is None
    assert not (tmp_path / "bench.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_bench_splits_a_stems_accumulates_from_the_transformers(tmp_path: Path,
                                                                random_export) -> None:
    """With a convolutional stem the rows give its accumulates and the transformer's apart,
    and the two make the whole (the golden model's count, SPEC.md section 5)."""
    stem = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 8}], "rpe": True}
    export = load_export(random_export(tmp_path / "stem", seed=2, image_shape=[1, 6, 6],
                                       dim=8, stem=stem))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 1, 6, 6), dtype=np.uint8)
    reference = GoldenReference(export, images, np.zeros(3, dtype=np.int64))
    rows = run_bench(GoldenAccelerator(export), images, [1, 3], reference, clock_mhz=100.0,
                     lanes=4)
    golden = GoldenModel(export)
    for row in rows:
        work = golden.run(images, budget=row["budget"]).work
        stem_ac = float(work["stem_ac_ops"].double().mean())
        assert row["stem_ac_ops_per_image"] == pytest.approx(stem_ac)
        assert row["stem_ac_ops_per_image"] > 0
        assert row["transformer_ac_ops_per_image"] + row["stem_ac_ops_per_image"] == \
            pytest.approx(row["ac_ops_per_image"])
