"""The board picker's speed on real images: the export's golden-vector images, full budget.

Dense events (:func:`stepvit.rtl.sizing.dense_events`) are the worst case: every input bit
1. Real images are sparse, and not equally so everywhere: on the Fashion-MNIST stem export
the stem engine and the blocks trade places as the bottleneck once activity counts (at 32
core lanes the dense model calls the core the slower part; on test images the stem at 10
lanes is 15 % slower than the blocks). So the picker ranks the designs that fit by the
cycles they would spend on the images the export ships (``golden_vectors.npz``), at the
trained mask, from what the vectors keep (numpy only, no golden model):

- **the core**: its dense events at those lanes, times the blocks' activity (their
  accumulates on the images over the dense events at one lane). Ragged chunks and the
  fixed passes cost what they cost densely; the accumulates scale with the spikes.
- **the stem engine**: its exact cycle model (:meth:`StemPlan.profile_cycles`, which the
  tests hold the engine to) on the set bits and empty positions of each map the stem's
  modules hand on (the vectors' ``stem_map_bits`` and ``stem_map_empty``).

The slower of the two sets the pace (the stem overlaps the blocks of the image before).
Vectors without these keys (an export of before them) leave the picker on dense events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepvit.model.export import Export, StepvitError
from stepvit.model.export.vectors import STEM_MAP_KEYS, STEM_WORK_KEY, load_golden_vectors
from stepvit.rtl.stem_plan import StemPlan


@dataclass(frozen=True)
class SamplePace:
    """Cycles per image on the export's golden-vector images, by lane count.

    Attributes
    ----------
    images : int
        Images measured.
    core_work : float
        Mean accumulates per image of the core (the blocks; without a stem the embedding
        too).
    stem_cycles : dict of int to float
        Stem lanes -> the stem engine's mean cycles per image (empty without a stem).
    """

    images: int
    core_work: float
    stem_cycles: dict[int, float]

    def core_cycles(self, dense: int, dense_one_lane: int) -> float:
        """Return the core's cycles at a lane count of ``dense`` dense events.

        ``dense_one_lane``: the core's dense events at one lane (about its dense
        accumulates), which turns ``core_work`` into an activity.
        """
        return dense * self.core_work / dense_one_lane


def sample_pace(export: Export, stem_lanes: range | None = None, *,
                chunk_major: bool = False) -> SamplePace | None:
    """Return the pace of ``export`` on its golden-vector images, or None without them.

    Parameters
    ----------
    export : Export
        A validated export.
    stem_lanes : range, optional
        The stem lane counts to model (default 1 to the widest stage's channels).
    chunk_major : bool
        Model the stem engine's chunk-major schedule (its passes depend on the lanes).
    """
    try:
        vectors = load_golden_vectors(export)
    except StepvitError:
        return None
    if export.t_max not in vectors.budgets:
        return None
    full, work = vectors.budgets.index(export.t_max), vectors.outputs
    if not export.arch.get("stem"):
        return SamplePace(len(vectors.images),
                          float((work["ac_ops"][full] + work["embed_ac_ops"][full]).mean()), {})
    if STEM_WORK_KEY not in work or any(key not in work for key in STEM_MAP_KEYS):
        return None
    rows = export.stem_modules
    mask = export.budget_mask(None)[:rows]
    bits, empty = (work[key] for key in STEM_MAP_KEYS)
    counts = [{(module, step): (int(bits[n, module, step]), int(empty[n, module, step]))
               for module in range(rows) for step in range(export.t_max)}
              for n in range(len(vectors.images))]

    def profiles_of(plan: StemPlan) -> list:
        return [plan.profile_of_counts(mask, image, counted)
                for image, counted in zip(vectors.images, counts)]

    plan = StemPlan.from_export(export, lanes=1)
    # a step-major image's passes and their inputs' bits do not depend on the lanes (a
    # chunk-major one's passes do: one set per chunk)
    profiles = profiles_of(plan)
    if stem_lanes is None:
        stem_lanes = range(1, max(stage.conv_shape[0] for stage in plan.stages) + 1)
    stem = {}
    for lanes in stem_lanes:
        lane_plan = StemPlan.from_export(export, lanes=lanes, chunk_major=chunk_major)
        lane_profiles = profiles_of(lane_plan) if chunk_major else profiles
        stem[lanes] = float(np.mean([lane_plan.profile_cycles(p) for p in lane_profiles]))
    return SamplePace(len(vectors.images),
                      float((work["ac_ops"][full] - work[STEM_WORK_KEY][full]).mean()), stem)


__all__ = ["SamplePace", "sample_pace"]
