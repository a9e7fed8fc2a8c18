"""The bulk path: many images through the Verilated design, checked against the golden model.

:class:`VerilatorSimulation` is one design (an export at a lane count): its Verilog
(regenerated only when the export, the lanes or the generator change) and its harness
library (:func:`stepvit.sim.verilator.build_library`, keyed by the Verilog's hash), both
under one build folder. :meth:`VerilatorSimulation.run` streams images at a budget, split
over ``jobs`` threads with one model each; :func:`compare_with_golden` names, for every
image that differs, the budget, the first LIF layer whose spike count differs and the
first differing logit; :func:`check_budget` is the per-budget report ``stepvit sim``
prints (the same keys for Icarus and Verilator).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.stem import accumulate_lower_bound
from stepvit.rtl.build_folder import (
    design_of,
    spike_word_bits_of,
    stem_chunk_major_of,
    stem_lanes_of,
)
from stepvit.rtl.protocol import (
    mask_register_values,
    pack_images,
    result_words,
    unpack_results,
)
from stepvit.sim.stem_cycles import stem_split
from stepvit.sim.verilator import BuiltLibrary, VerilatedAccel, build_library

#: The stamp beside the generated Verilog: what it was generated from.
SOURCE_STAMP = "source.json"
#: Images the golden model runs at once (bounds its memory on a whole test split).
GOLDEN_BATCH = 500


def generated_verilog(export: Export, folder: str | Path, *, lanes: int,
                      stem_lanes: int | None = None, stem_chunk_major: bool = False,
                      spike_word_bits: int | None = None) -> Path:
    """Return ``folder/stepvit_accel.v`` for ``export`` at ``lanes``, generating it if stale.

    ``stem_lanes``, ``stem_chunk_major``: the stem engine's lanes and schedule;
    ``spike_word_bits``: the core's spike maps' widest word (``None``: one word a token).
    """
    from stepvit.rtl.generate import VERILOG_FILE, generate

    folder = Path(folder)
    source = {
        **design_of(export, lanes, stem_lanes=stem_lanes, stem_chunk_major=stem_chunk_major,
                    spike_word_bits=spike_word_bits),
        "manifest": hashlib.sha256(json.dumps(export.manifest, sort_keys=True,
                                              default=str).encode()).hexdigest(),
    }
    stamp = folder / SOURCE_STAMP
    verilog = folder / VERILOG_FILE
    if verilog.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == source:
        return verilog
    generate(export, folder, lanes=lanes, with_rtlil=False, stem_lanes=stem_lanes,
             stem_chunk_major=stem_chunk_major, spike_word_bits=spike_word_bits)
    stamp.write_text(json.dumps(source, indent=2) + "\n")
    return verilog


def cycle_limit(export: Export, lanes: int) -> int:
    """Return the cycles one image may take before the design counts as hung."""
    from stepvit.sim.runner import cycle_limit as limit

    return limit(export, lanes)


@dataclass
class BulkRun:
    """Images streamed through the Verilated design at one budget.

    Attributes
    ----------
    packets : numpy.ndarray
        ``uint32 [B, packet words]``, in image order.
    measured_cycles : numpy.ndarray
        ``int64 [B]``: first input word accepted to first packet word offered, as the
        harness counted them (the packet's cycle word must say the same): each image's
        latency, waits behind the images before it included.
    stream_cycles : int
        The cycles the stream took (first image's first word to last image's first result
        word), summed over the jobs' accelerators: images overlap, so per image this is the
        throughput figure, less than the mean latency.
    simulated_cycles : int
        Clock cycles simulated in all (every job, resets and register writes included).
    seconds : float
        Wall time of the streaming (not the build).
    jobs : int
        Threads used.
    """

    packets: np.ndarray
    measured_cycles: np.ndarray
    stream_cycles: int
    simulated_cycles: int
    seconds: float
    jobs: int

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per wall-clock second, all jobs together."""
        return self.simulated_cycles / self.seconds if self.seconds > 0 else 0.0


class VerilatorSimulation:
    """One generated design, Verilated with the harness, ready to stream images.

    Parameters
    ----------
    export : Export
        The model.
    build_dir : str or Path
        Folder of the Verilog (``rtl/``) and the harness builds (``verilator/<key>/``).
    lanes : int
        Parallel accumulator lanes.
    trace : bool
        Build the FST-tracing variant (for :meth:`trace_image`).
    """

    def __init__(self, export: Export, build_dir: str | Path, *, lanes: int,
                 trace: bool = False) -> None:
        self.export = export
        self.lanes = lanes
        self.build_dir = Path(build_dir).resolve()
        self.stem_lanes = stem_lanes_of(self.build_dir)
        self.verilog = generated_verilog(export, self.build_dir / "rtl", lanes=lanes,
                                         stem_lanes=self.stem_lanes,
                                         stem_chunk_major=stem_chunk_major_of(self.build_dir),
                                         spike_word_bits=spike_word_bits_of(self.build_dir))
        self.library: BuiltLibrary = build_library(self.verilog, self.build_dir / "verilator",
                                                   trace=trace)
        self.packet_words = result_words(export)
        self.timeout_cycles = cycle_limit(export, lanes)

    def open(self, *, trace: str | Path | None = None) -> VerilatedAccel:
        """Return a fresh model of the design, out of reset."""
        accel = VerilatedAccel(self.library.path, trace=trace)
        accel.reset()
        return accel

    def _write_budget(self, accel: VerilatedAccel, budget: int | None) -> None:
        for index, value in enumerate(mask_register_values(self.export.budget_mask(budget))):
            accel.write(f"MASK{index}", value)

    def _run_chunk(self, frames: np.ndarray, budget: int | None,
                   first_image: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        with self.open() as accel:
            self._write_budget(accel, budget)
            run = accel.run_frames(frames, self.packet_words, self.timeout_cycles)
            if run.status != "done":
                image = first_image + len(run.packets)
                what = ("no result packet within "
                        f"{self.timeout_cycles} cycles" if run.status == "timeout"
                        else "a result packet of the wrong length")
                raise StepvitError(f"image {image} at budget {budget}: {what} "
                                   f"(cycle {accel.cycle})")
            return run.packets, run.measured_cycles, accel.cycle, run.stream_cycles

    def run(self, images: np.ndarray, budget: int | None, *, jobs: int = 1) -> BulkRun:
        """Stream ``images`` (``uint8 [B, C, H, W]``) at ``budget`` over ``jobs`` threads.

        Raises
        ------
        StepvitError
            If an image gets no packet within the cycle limit, or a malformed one.
        """
        if jobs < 1:
            raise StepvitError(f"--jobs must be at least 1, got {jobs}")
        frames = pack_images(np.ascontiguousarray(images, dtype=np.uint8))
        chunks = [chunk for chunk in np.array_split(np.arange(len(frames)), jobs) if len(chunk)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            outcomes = list(pool.map(
                lambda chunk: self._run_chunk(frames[chunk], budget, int(chunk[0])), chunks))
        seconds = time.perf_counter() - start
        return BulkRun(
            packets=np.concatenate([outcome[0] for outcome in outcomes]),
            measured_cycles=np.concatenate([outcome[1] for outcome in outcomes]),
            stream_cycles=sum(outcome[3] for outcome in outcomes),
            simulated_cycles=sum(outcome[2] for outcome in outcomes),
            seconds=seconds,
            jobs=len(chunks),
        )

    def trace_image(self, image: np.ndarray, budget: int | None, path: str | Path) -> Path:
        """Write the FST waveform of one image (``uint8 [C, H, W]``) at ``budget`` to ``path``.

        Needs a simulation built with ``trace=True``.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = pack_images(np.asarray(image, dtype=np.uint8)[None])
        with self.open(trace=path) as accel:
            self._write_budget(accel, budget)
            accel.run_frames(frames, self.packet_words, self.timeout_cycles)
            accel.step(4)
        return path


@dataclass
class GoldenOutputs:
    """The golden model's outputs for a batch at one budget.

    Attributes
    ----------
    logits : numpy.ndarray
        ``int64 [B, K]``.
    predicted : numpy.ndarray
        ``int64 [B]``.
    spike_totals : numpy.ndarray
        ``int64 [B, layers]`` in SPEC.md layer order.
    work : dict of str to numpy.ndarray
        ``ac_ops``, ``embed_ac_ops``, ``dense_ac_ops`` per image.
    """

    logits: np.ndarray
    predicted: np.ndarray
    spike_totals: np.ndarray
    work: dict[str, np.ndarray]


def golden_outputs(export: Export, images: np.ndarray, budget: int | None) -> GoldenOutputs:
    """Run the golden model on ``images`` at ``budget``, :data:`GOLDEN_BATCH` at a time."""
    from stepvit.model.golden import GoldenModel

    model = GoldenModel(export)
    mask = export.budget_mask(budget)
    parts = []
    for first in range(0, len(images), GOLDEN_BATCH):
        result = model.run(images[first:first + GOLDEN_BATCH], masks=mask)
        parts.append((np.asarray(result.logits), np.asarray(result.predicted),
                      np.asarray(result.layer_spike_totals()),
                      {key: np.asarray(value) for key, value in result.work.items()}))
    return GoldenOutputs(
        logits=np.concatenate([part[0] for part in parts]).astype(np.int64),
        predicted=np.concatenate([part[1] for part in parts]).astype(np.int64),
        spike_totals=np.concatenate([part[2] for part in parts]).astype(np.int64),
        work={key: np.concatenate([np.broadcast_to(part[3][key], (len(part[0]),))
                                   for part in parts]).astype(np.int64)
              for key in parts[0][3]},
    )


@dataclass
class ImageMismatch:
    """One image whose packet differs from the golden model.

    Attributes
    ----------
    image : int
        Index of the image in the batch.
    budget : int or None
        The budget it ran at.
    first_layer : str or None
        The first LIF layer (SPEC.md order) whose spike count differs.
    layer_values : tuple of int or None
        That layer's spike count: (accelerator, golden).
    first_logit : int or None
        The first logit that differs.
    logit_values : tuple of int or None
        That logit: (accelerator, golden).
    predicted : tuple of int
        The class: (accelerator, golden).
    cycles_word : tuple of int or None
        (packet's cycle word, cycles the harness measured) when they differ.
    """

    image: int
    budget: int | None
    first_layer: str | None
    layer_values: tuple[int, int] | None
    first_logit: int | None
    logit_values: tuple[int, int] | None
    predicted: tuple[int, int]
    cycles_word: tuple[int, int] | None = None

    def message(self) -> str:
        """Return one line that says what differs."""
        parts = [f"image {self.image} at budget "
                 f"{'trained' if self.budget is None else self.budget}:"]
        if self.first_layer is not None and self.layer_values is not None:
            got, want = self.layer_values
            parts.append(f"first differing layer {self.first_layer} "
                         f"(spike count {got}, golden {want});")
        if self.first_logit is not None and self.logit_values is not None:
            got, want = self.logit_values
            parts.append(f"first differing logit {self.first_logit} ({got}, golden {want});")
        got, want = self.predicted
        if got != want:
            parts.append(f"class {got}, golden {want};")
        if self.cycles_word is not None:
            parts.append(f"cycle word {self.cycles_word[0]}, measured {self.cycles_word[1]};")
        return " ".join(parts).rstrip(";")


def compare_with_golden(packets: np.ndarray, golden: GoldenOutputs, layer_names: list[str],
                        budget: int | None,
                        measured_cycles: np.ndarray | None = None) -> list[ImageMismatch]:
    """Return one :class:`ImageMismatch` per image whose packet differs from ``golden``."""
    num_classes = golden.logits.shape[1]
    logits, predicted, cycles, spikes = unpack_results(packets, num_classes)
    golden_predicted = golden.predicted
    bad_logits = logits != golden.logits
    bad_spikes = spikes != golden.spike_totals
    bad_class = predicted != golden_predicted
    bad_cycles = (np.zeros(len(packets), dtype=bool) if measured_cycles is None
                  else cycles != measured_cycles)
    mismatches = []
    for image in np.flatnonzero(bad_logits.any(1) | bad_spikes.any(1) | bad_class | bad_cycles):
        layer = int(np.argmax(bad_spikes[image])) if bad_spikes[image].any() else None
        logit = int(np.argmax(bad_logits[image])) if bad_logits[image].any() else None
        mismatches.append(ImageMismatch(
            image=int(image),
            budget=budget,
            first_layer=None if layer is None else layer_names[layer],
            layer_values=None if layer is None else (int(spikes[image, layer]),
                                                     int(golden.spike_totals[image, layer])),
            first_logit=logit,
            logit_values=None if logit is None else (int(logits[image, logit]),
                                                     int(golden.logits[image, logit])),
            predicted=(int(predicted[image]), int(golden_predicted[image])),
            cycles_word=(None if not bad_cycles[image]
                         else (int(cycles[image]), int(measured_cycles[image]))),
        ))
    return mismatches


def check_budget(simulation: VerilatorSimulation, images: np.ndarray, budget: int | None, *,
                 jobs: int = 1, golden: GoldenOutputs | None = None) -> dict[str, Any]:
    """Stream ``images`` at ``budget`` and compare every packet with the golden model.

    Returns the report of one budget that ``stepvit sim`` prints: mismatches (with the
    first differing layer and logit of each), each image's cycles (its latency), the
    stream's cycles per image (the throughput: images overlap), accumulates, the lower
    bound, the efficiency (lower bound over the stream's cycles per image), the dense
    reference, and the simulation's speed; with a convolutional stem, the stem's and the
    blocks' parts (:func:`stepvit.sim.stem_cycles.stem_split`).
    """
    export, lanes = simulation.export, simulation.lanes
    if golden is None:
        golden = golden_outputs(export, images, budget)
    run = simulation.run(images, budget, jobs=jobs)
    mismatches = compare_with_golden(run.packets, golden, export.layer_names(), budget,
                                     run.measured_cycles)
    cycles = run.measured_cycles.tolist()
    accumulates = (golden.work["ac_ops"] + golden.work["embed_ac_ops"]).tolist()
    lower_bound = accumulate_lower_bound(export.arch, golden.work, lanes,
                                         simulation.stem_lanes).tolist()
    return {
        "budget": budget,
        "images": len(images),
        "mismatches": len(mismatches),
        "mismatched_images": [mismatch.image for mismatch in mismatches],
        "failures": [mismatch.message() for mismatch in mismatches[:20]],
        "cycles_per_image": cycles,
        "mean_cycles": sum(cycles) / len(cycles),
        "stream_cycles_per_image": run.stream_cycles / len(images),
        "accumulates_per_image": accumulates,
        "ac_ops_per_image": golden.work["ac_ops"].tolist(),
        "embed_ac_ops_per_image": golden.work["embed_ac_ops"].tolist(),
        "lower_bound_cycles": sum(lower_bound) / len(lower_bound),
        "efficiency": sum(lower_bound) / run.stream_cycles,
        "dense_reference_cycles": float(golden.work["dense_ac_ops"].sum()) / len(images) / lanes,
        "predicted": unpack_results(run.packets, export.arch["num_classes"])[1].tolist(),
        "simulator": "verilator",
        "simulated_cycles": run.simulated_cycles,
        "wall_s": run.seconds,
        "cycles_per_second": run.cycles_per_second,
        "jobs": run.jobs,
        **(stem_split(export, images, budget, golden.work, lanes=lanes,
                      stem_lanes=simulation.stem_lanes) if export.arch.get("stem") else {}),
    }
