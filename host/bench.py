"""The budget benchmark: accuracy, cycles, latency, work and energy per time-step budget.

For every budget the accelerator (any backend) runs the same images, and its outputs
are compared with a reference: the golden model off the board, the export's golden
vectors on it. Accuracy comes from the reference too (the golden model on the full test
split, or the labels of the golden vectors on a board). numpy only, so that it runs on a
board's Python; the golden reference imports torch when it is built.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stepvit.host.accelerator import STAGES, Accelerator, InferenceResult
from stepvit.model.export import Export
from stepvit.model.export.energy import energy_estimate_uj
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.stem import accumulate_lower_bound, first_layer_macs
from stepvit.model.export.vectors import STEM_WORK_KEY, VECTOR_WORK_KEYS, GoldenVectors

#: Work counts the bench reports, per image (golden ``work`` names; ``stem_ac_ops``, the
#: part of ``ac_ops`` in a convolutional stem, where the export has one and the golden model
#: is the reference).
WORK_KEYS = ("ac_ops", "embed_ac_ops", "mac_ops", "dense_ac_ops", "stem_ac_ops")


@dataclass
class Reference:
    """Expected outputs for one budget.

    Attributes
    ----------
    logits, predicted, spike_totals : numpy.ndarray
        What the accelerator must return, per image.
    work : dict of str to numpy.ndarray or None
        Golden work counts per image (:data:`WORK_KEYS`), where known.
    """

    logits: np.ndarray
    predicted: np.ndarray
    spike_totals: np.ndarray
    work: dict[str, np.ndarray] | None = None


class ReferenceSource(Protocol):
    """Where expected outputs and accuracies come from."""

    def expected(self, budget: int, images: np.ndarray) -> Reference:
        """Return the expected outputs of ``images`` at ``budget``."""

    def accuracy(self, budget: int) -> tuple[float | None, int]:
        """Return the accuracy at ``budget`` and the number of images it was measured on."""


def count_mismatches(result: InferenceResult, reference: Reference) -> int:
    """Return the number of images whose logits, class or spike totals differ from the reference."""
    differs = (
        np.any(result.logits != reference.logits, axis=1)
        | (result.predicted != reference.predicted)
        | np.any(result.spike_totals != reference.spike_totals, axis=1)
    )
    return int(differs.sum())


def active_steps(export: Export, budget: int) -> float:
    """Return the mean over modules of the steps each runs under ``budget``."""
    return float(export.budget_mask(budget).sum(axis=1).mean())


def bench_budget(accel: Accelerator, images: np.ndarray, budget: int,
                 reference: ReferenceSource, *, clock_mhz: float, lanes: int | None,
                 labels: np.ndarray | None = None,
                 stem_lanes: int | None = None) -> dict[str, Any]:
    """Run ``images`` at ``budget`` and return one row of the benchmark.

    Parameters
    ----------
    accel : Accelerator
        The accelerator under test.
    images : numpy.ndarray
        ``uint8 [B, C, H, W]``.
    budget : int
        The time-step budget.
    reference : ReferenceSource
        Expected outputs and accuracy.
    clock_mhz : float
        The board clock that turns cycles into µs.
    lanes : int or None
        Accumulator lanes of the design (for the cycle lower bound), where known.
    labels : numpy.ndarray, optional
        Labels of ``images``: the row then has the accelerator's own accuracy on them.
    stem_lanes : int, optional
        The stem engine's lanes where they differ from ``lanes`` (a convolutional stem).
    """
    accel.set_budget(budget)
    result = accel.infer(images)
    expected = reference.expected(budget, images)
    accuracy, accuracy_images = reference.accuracy(budget)
    count = images.shape[0]
    host_seconds = sum(result.stage_seconds.values())
    row: dict[str, Any] = {
        "budget": budget,
        "active_steps": active_steps(accel.export, budget),
        "accuracy": accuracy,
        "accuracy_images": accuracy_images,
        "images": count,
        "device_accuracy": None if labels is None else float((result.predicted == labels).mean()),
        "mismatches": count_mismatches(result, expected),
        "host_ms_per_image": {stage: 1e3 * result.stage_seconds[stage] / count
                              for stage in STAGES},
        "host_images_per_s": count / host_seconds if host_seconds > 0 else None,
        "cycles_per_image": None,
        "latency_us": None,
        "idle_latency_us": None,
        "images_per_s": None,
    }
    if result.cycles is not None:
        # Streamed back to back, images overlap: the stream's cycles per image is the
        # throughput; an image's own cycles (its latency) include waits behind the others.
        # The first image waits behind none: its latency is that of an idle accelerator.
        latency = float(result.cycles.mean())
        cycles = result.stream_cycles / count if result.stream_cycles else latency
        idle = int(result.cycles[0])
        row.update(cycles_per_image=cycles, latency_cycles=latency,
                   cycles_of="stream" if result.stream_cycles else "latency",
                   cycles_min=int(result.cycles.min()), cycles_max=int(result.cycles.max()),
                   latency_us=latency / clock_mhz, idle_latency_cycles=idle,
                   idle_latency_us=idle / clock_mhz,
                   images_per_s=clock_mhz * 1e6 / cycles if cycles > 0 else None)
    if result.weight_stall_cycles is not None:
        # the core's waits for weight tiles (a design that streams its weights from DDR)
        row["weight_stall_cycles_per_image"] = result.weight_stall_cycles / count
    if result.stem_weight_stall_cycles is not None:
        # the stem's waits for its tap tiles (they overlap the core's in time)
        row["stem_weight_stall_cycles_per_image"] = result.stem_weight_stall_cycles / count
    if result.stream_stall_cycles is not None:
        # the core's waits for its residual stream (a design that keeps it in DDR)
        row["stream_stall_cycles_per_image"] = result.stream_stall_cycles / count
    if result.stem_map_stall_cycles is not None:
        # the stem's waits for its spike maps (a design that keeps them in DDR)
        row["stem_map_stall_cycles_per_image"] = result.stem_map_stall_cycles / count
    work = {key: float(values.mean()) for key, values in (expected.work or {}).items()
            if key in WORK_KEYS}
    row.update({f"{key}_per_image": value for key, value in work.items()})
    if "stem_ac_ops" in work:
        row["transformer_ac_ops_per_image"] = work["ac_ops"] - work["stem_ac_ops"]
    if "ac_ops" in work and "mac_ops" in work:
        row["energy_uj"] = energy_estimate_uj(work["mac_ops"], work["ac_ops"])
    # (a stem export's vectors written before they kept the stem's part give no bound)
    stem_known = "stem_ac_ops" in work or not accel.export.arch.get("stem")
    if lanes and "ac_ops" in work and "embed_ac_ops" in work and stem_known:
        row["lower_bound_cycles"] = accumulate_lower_bound(accel.export.arch, work, lanes,
                                                           stem_lanes)
        if row["cycles_per_image"]:
            row["efficiency"] = row["lower_bound_cycles"] / row["cycles_per_image"]
    if lanes and "dense_ac_ops" in work:
        row["dense_lower_bound_cycles"] = work["dense_ac_ops"] / lanes
    return row


def run_bench(accel: Accelerator, images: np.ndarray, budgets: Sequence[int],
              reference: ReferenceSource, *, clock_mhz: float, lanes: int | None,
              labels: np.ndarray | None = None,
              progress: Callable[[str], None] | None = None,
              stem_lanes: int | None = None) -> list[dict[str, Any]]:
    """Return one benchmark row per budget (see :func:`bench_budget`)."""
    rows = []
    for budget in budgets:
        if progress is not None:
            progress(f"budget {budget}: {images.shape[0]} images on {accel.name}")
        rows.append(bench_budget(accel, images, budget, reference, clock_mhz=clock_mhz,
                                 lanes=lanes, labels=labels, stem_lanes=stem_lanes))
    return rows


def _cell(value: Any, spec: str) -> str:
    """Format ``value`` with ``spec`` (``"8.4f"``); a missing value is a right-aligned dash."""
    if value is None:
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Return the benchmark as a plain-text table, then the host stages per image."""
    header = (f"{'budget':>6} {'steps':>5} {'accuracy':>8} {'dev_acc':>7} {'cycles':>9} "
              f"{'lat_us':>8} {'idle_us':>8} "
              f"{'img/s':>9} {'stall':>8} {'AC/img':>9} {'E_uJ':>7} {'effic':>6} "
              f"{'mismatch':>8}")
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['budget']:>6} {row['active_steps']:>5.2f} {_cell(row['accuracy'], '8.4f')} "
            f"{_cell(row['device_accuracy'], '7.4f')} {_cell(row['cycles_per_image'], '9.1f')} "
            f"{_cell(row['latency_us'], '8.2f')} {_cell(row['idle_latency_us'], '8.2f')} "
            f"{_cell(row['images_per_s'], '9.0f')} "
            f"{_cell(row.get('weight_stall_cycles_per_image'), '8.1f')} "
            f"{_cell(row.get('ac_ops_per_image'), '9.0f')} "
            f"{_cell(row.get('energy_uj'), '7.3f')} {_cell(row.get('efficiency'), '6.3f')} "
            f"{row['mismatches']:>8}")
    # the waits apart from the weight tiles' stall column, where the design has them: a
    # streamed stem's for its tap tiles (they overlap the core's); the residual stream in
    # DDR: the walk's for its reads or write room, the stem's tokens' for write room; the
    # stem's maps in DDR: its passes' for room and answers, its scatters' and tokens' for
    # words (they overlap the core's)
    for key, what in (("stem_weight_stall_cycles_per_image",
                       "stem stall (cycles an image the stem waited for tap tiles)"),
                      ("stream_stall_cycles_per_image",
                       "stream stall (cycles an image the core waited for its residual "
                       "stream in DDR)"),
                      ("stem_map_stall_cycles_per_image",
                       "stem map stall (cycles an image the stem waited for its spike maps "
                       "in DDR)")):
        stalls = [(row["budget"], row[key]) for row in rows if row.get(key) is not None]
        if stalls:
            lines.append(f"{what}: " + ", ".join(f"budget {budget}: {value:.1f}"
                                                 for budget, value in stalls))
    sources = {row.get("cycles_of") for row in rows} - {None}
    if sources:
        lines += [("cycles: an image's share of the images streamed back to back (img/s at "
                   "the clock)" if sources == {"stream"} else
                   "cycles: an image's mean latency (the backend gave no stream clock)")
                  + "; stall: of them, the core's waits for weight tiles",
                  "lat_us: an image's mean latency, its wait behind the images before it "
                  "included; idle_us: the first image's, on an idle accelerator"]
    lines.append("")
    lines.append("host ms/image: " + " ".join(f"{stage:>9}" for stage in STAGES))
    for row in rows:
        times = row["host_ms_per_image"]
        lines.append(f"budget {row['budget']:>6}: "
                     + " ".join(f"{times[stage]:>9.3f}" for stage in STAGES))
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path | None]:
    """Write ``bench.json`` and ``bench.png`` (if matplotlib is there) into ``out_dir``.

    Returns
    -------
    tuple
        The JSON path and the PNG path (``None`` when matplotlib is missing).
    """
    from stepvit.host.plot import plot_bench

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    png_path = plot_bench(report, out / "bench.png")
    return json_path, png_path


def print_progress(message: str) -> None:
    """Print a progress line to stderr (host/ has no tqdm: a board's Python lacks it)."""
    print(message, file=sys.stderr, flush=True)


class GoldenReference:
    """The golden model as the reference: expected outputs, work and test-split accuracy.

    Parameters
    ----------
    export : Export
        The export.
    test_images, test_labels : numpy.ndarray, optional
        The test split for the accuracy (``uint8 [N, C, H, W]`` and ``int [N]``); without
        them the accuracy is ``None``.
    batch : int
        Images per golden run when measuring accuracy.
    """

    def __init__(self, export: Export, test_images: np.ndarray | None = None,
                 test_labels: np.ndarray | None = None, *, batch: int = 512) -> None:
        from stepvit.host.backend_golden import GoldenAccelerator

        self._golden = GoldenAccelerator(export)
        self._test_images = test_images
        self._test_labels = None if test_labels is None else np.asarray(test_labels)
        self._batch = batch
        self._accuracies: dict[int, float] = {}

    def expected(self, budget: int, images: np.ndarray) -> Reference:
        """Return the golden outputs and work of ``images`` at ``budget``."""
        self._golden.set_budget(budget)
        result = self._golden.infer(images)
        return Reference(result.logits, result.predicted, result.spike_totals,
                         self._golden.last_work)

    def accuracy(self, budget: int) -> tuple[float | None, int]:
        """Return the golden accuracy on the test split at ``budget`` (cached)."""
        if self._test_images is None:
            return None, 0
        if budget not in self._accuracies:
            self._golden.set_budget(budget)
            correct = 0
            for first in range(0, len(self._test_images), self._batch):
                chunk = self._test_images[first:first + self._batch]
                predicted = self._golden.infer(chunk).predicted
                correct += int((predicted == self._test_labels[first:first + len(chunk)]).sum())
            self._accuracies[budget] = correct / len(self._test_images)
        return self._accuracies[budget], len(self._test_images)


class VectorsReference:
    """The golden vectors as the reference (on a board: no torch, no golden model)."""

    def __init__(self, vectors: GoldenVectors, export: Export) -> None:
        self._vectors = vectors
        # the first layer's MACs in the float view are fixed per image
        self._mac_ops = first_layer_macs(export.arch)

    def expected(self, budget: int, images: np.ndarray) -> Reference:
        """Return the stored outputs at ``budget`` of the first ``len(images)`` vectors."""
        vectors = self._vectors
        if budget not in vectors.budgets:
            raise StepvitError(f"golden_vectors.npz has no budget {budget} "
                               f"(it has {vectors.budgets})")
        count = images.shape[0]
        if count > len(vectors.images) or not np.array_equal(images, vectors.images[:count]):
            raise StepvitError("the images are not the golden vectors' first images")
        index = vectors.budgets.index(budget)
        outputs = {key: values[index, :count] for key, values in vectors.outputs.items()}
        work = {key: outputs[key] for key in (*VECTOR_WORK_KEYS, STEM_WORK_KEY)
                if key in outputs}
        work["mac_ops"] = np.full(count, self._mac_ops, dtype=np.int64)
        return Reference(outputs["logits"], outputs["predicted"], outputs["spike_totals"], work)

    def accuracy(self, budget: int) -> tuple[float | None, int]:
        """Return the golden accuracy on all the vectors at ``budget``."""
        vectors = self._vectors
        predicted = vectors.outputs["predicted"][vectors.budgets.index(budget)]
        return float((predicted == vectors.labels).mean()), len(vectors.labels)
