"""One interface to the accelerator, whatever runs it: a board, the simulation, the golden model.

An :class:`Accelerator` is opened on an export, takes a time-step budget, and turns a
batch of ``uint8`` images into an :class:`InferenceResult`. The backends live in
``backend_pynq.py`` (a PYNQ board), ``backend_sim.py`` (the cocotb simulation of the
generated Verilog) and ``backend_golden.py`` (the integer golden model); each imports its
heavy package only when opened, so this module needs numpy and pyyaml alone.

The stream formats (frames, packets, registers) are ``rtl/protocol.py``'s, the one
definition the generator and the simulation use too (``rtl/PROTOCOL.md``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from stepvit.model.export import Export, load_export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.protocol import check_images

#: Host stages, in order, that every inference times (FINN's throughput test split).
STAGES = ("pack", "copy_in", "execute", "copy_out", "unpack")

#: The backends :func:`open_accelerator` knows.
BACKENDS = ("pynq", "sim", "golden")

@dataclass
class InferenceResult:
    """What the accelerator returns for a batch of images.

    Attributes
    ----------
    logits : numpy.ndarray
        ``int64 [B, K]``.
    predicted : numpy.ndarray
        ``int64 [B]``: the predicted class, ``-1`` for a frame the accelerator dropped.
    cycles : numpy.ndarray or None
        ``int64 [B]``: accelerator cycles per image (first input word accepted to first
        output word offered); ``None`` for a backend without a clock (golden).
    spike_totals : numpy.ndarray
        ``int64 [B, layers]``: spikes per LIF layer in SPEC.md section 1 order.
    stage_seconds : dict of str to float
        Host wall time of each stage of :data:`STAGES` over the whole batch.
    stream_cycles : int or None
        Accelerator cycles of the whole batch when it was streamed back to back; images
        overlap, so this is less than the sum of ``cycles``. The simulation's testbench
        counts from the first image's first word to the last image's first result word; a
        board (or the virtual board) the rise of ``BUSY_CYCLES``, the cycles with an image
        in flight, to the last result word. ``None`` where the backend does not stream.
    weight_stall_cycles : int or None
        Cycles the core waited for weight tiles over the whole batch (``WEIGHT_STALLS``'s
        rise), on a design that streams its weights from DDR; ``None`` elsewhere.
    stem_weight_stall_cycles : int or None
        Cycles the stem waited for its tap tiles over the batch (``STEM_WEIGHT_STALLS``'s
        rise; they overlap the core's in time); ``None`` where the design does not stream.
    stream_stall_cycles : int or None
        Cycles the core waited for its residual stream over the batch (``STREAM_STALLS``'s
        rise), on a design that keeps the stream in DDR; ``None`` elsewhere.
    stem_map_stall_cycles : int or None
        Cycles the stem waited for its spike maps over the batch (``STEM_MAP_STALLS``'s
        rise; they overlap the core's in time), on a design that keeps them in DDR;
        ``None`` elsewhere.
    """

    logits: np.ndarray
    predicted: np.ndarray
    cycles: np.ndarray | None
    spike_totals: np.ndarray
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    stream_cycles: int | None = None
    weight_stall_cycles: int | None = None
    stem_weight_stall_cycles: int | None = None
    stream_stall_cycles: int | None = None
    stem_map_stall_cycles: int | None = None


class Accelerator(abc.ABC):
    """An accelerator opened on one export; use it as a context manager.

    Parameters
    ----------
    export : Export
        The validated export the accelerator runs.

    Attributes
    ----------
    export : Export
        The export.
    budget : int or None
        The time-step budget in force (``None``: the trained masks).
    """

    #: Backend name, as the command line spells it.
    name: str = ""

    def __init__(self, export: Export) -> None:
        self.export = export
        self.budget: int | None = None
        self._closed = False

    def set_budget(self, budget: int | None) -> None:
        """Cap every module to its first ``budget`` active steps (``None``: trained masks).

        Raises
        ------
        StepvitError
            If ``budget`` is below 1 or the accelerator is closed.
        """
        self._check_open()
        if budget is not None and int(budget) < 1:
            raise StepvitError(f"budget must be at least 1 time step, got {budget}")
        budget = None if budget is None else int(budget)
        self._apply_budget(budget)
        self.budget = budget

    def infer(self, images: np.ndarray) -> InferenceResult:
        """Run a batch of images through the accelerator.

        Parameters
        ----------
        images : numpy.ndarray
            ``uint8 [B, C, H, W]`` of the export's image shape.

        Raises
        ------
        StepvitError
            If the images have the wrong type, dtype or shape, or the accelerator is closed.
        DeviceTimeout
            If the device does not answer within its timeout (pynq).
        """
        self._check_open()
        check_images(images, self.export.arch["image_shape"])
        return self._infer(np.ascontiguousarray(images))

    def close(self) -> None:
        """Release everything the accelerator holds; calling it again does nothing."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StepvitError(f"the {self.name} accelerator is closed")

    @abc.abstractmethod
    def _apply_budget(self, budget: int | None) -> None:
        """Make the next inferences use ``budget``."""

    @abc.abstractmethod
    def _infer(self, images: np.ndarray) -> InferenceResult:
        """Run checked images."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free what the backend holds."""


def open_accelerator(backend: str, export: Export | str | Path, *,
                     overlay: str | Path | None = None, lanes: int | None = None,
                     build_dir: str | Path | None = None, timeout_s: float = 5.0,
                     simulator: str = "verilator", jobs: int = 1,
                     max_batch: int = 64) -> Accelerator:
    """Open the accelerator of ``backend`` on ``export``.

    Parameters
    ----------
    backend : str
        ``"pynq"`` (a board), ``"sim"`` (the Verilog under Verilator or Icarus) or ``"golden"``.
    export : Export or path
        The export, or its directory.
    overlay : path, optional
        pynq only: the overlay's ``.bit`` file or the folder holding ``stepvit.bit`` and
        ``stepvit.hwh``.
    lanes : int, optional
        sim only: accumulator lanes of the generated design (default: ``build_dir``'s
        recorded design, else :data:`~stepvit.rtl.build_folder.DEFAULT_LANES`).
    build_dir : path, optional
        sim only: where the simulation builds (reused between calls).
    timeout_s : float
        pynq only: how long one batch's DMA transfers may take before ``DeviceTimeout``.
    simulator : str
        sim only: ``"verilator"`` (the C++ bulk path) or ``"icarus"`` (cocotb).
    jobs : int
        sim with Verilator only: threads, one model each.
    max_batch : int
        pynq only: images per DMA transfer (one MM2S and one S2MM transfer a batch).

    Raises
    ------
    StepvitError
        For an unknown backend, a bad export, or a backend that cannot open.
    """
    if not isinstance(export, Export):
        export = load_export(export)
    if backend == "golden":
        from stepvit.host.backend_golden import GoldenAccelerator

        return GoldenAccelerator(export)
    if backend == "sim":
        from stepvit.host.backend_sim import SimAccelerator

        return SimAccelerator(export, lanes=lanes, build_dir=build_dir, simulator=simulator,
                              jobs=jobs)
    if backend == "pynq":
        from stepvit.host.backend_pynq import PynqAccelerator

        if overlay is None:
            raise StepvitError("the pynq backend needs an overlay (--overlay DIR)")
        return PynqAccelerator(export, overlay, timeout_s=timeout_s, max_batch=max_batch)
    raise StepvitError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
