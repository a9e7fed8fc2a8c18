"""The golden backend: the integer golden model (``model/golden.py``) as an accelerator.

It has no clock, so its results carry no cycle counts; it is the reference the other
backends are compared against. torch is imported when the backend is opened.
"""

from __future__ import annotations

import time

import numpy as np

from stepvit.host.accelerator import STAGES, Accelerator, InferenceResult
from stepvit.model.export import Export


def as_int64(values: object) -> np.ndarray:
    """Return a torch tensor or array-like as a numpy ``int64`` array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64)


class GoldenAccelerator(Accelerator):
    """The integer golden model, run on the host CPU.

    Attributes
    ----------
    last_work : dict of str to numpy.ndarray or None
        The golden ``work`` counts per image of the last batch (``ac_ops`` and the like).
    """

    name = "golden"

    def __init__(self, export: Export) -> None:
        from stepvit.model.golden import GoldenModel

        super().__init__(export)
        self._model = GoldenModel(export)
        self.last_work: dict[str, np.ndarray] | None = None

    def _apply_budget(self, budget: int | None) -> None:
        """Keep the budget: it is an argument of every golden run."""

    def _infer(self, images: np.ndarray) -> InferenceResult:
        start = time.perf_counter()
        result = self._model.run(images, budget=self.budget)
        execute_s = time.perf_counter() - start
        self.last_work = {name: as_int64(counts) for name, counts in result.work.items()}
        stage_seconds = dict.fromkeys(STAGES, 0.0)
        stage_seconds["execute"] = execute_s
        return InferenceResult(
            logits=as_int64(result.logits),
            predicted=as_int64(result.predicted),
            cycles=None,
            spike_totals=as_int64(result.layer_spike_totals()),
            stage_seconds=stage_seconds,
        )

    def _release(self) -> None:
        self._model = None
