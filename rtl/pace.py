"""The board picker's speed on real images: the export's golden-vector images, full budget.

Dense events (:func:`stepvit.rtl.sizing.dense_events`) are the worst case: every input bit
1. Real images are sparse, and not equally so everywhere: on the Fashion-MNIST stem export
the stem engine and the blocks trade places as the bottleneck once activity counts (at 32
core lanes the dense model calls the core the slower part; on test images the stem at 10
lanes is 15 % slower than the blocks' bound). So the picker ranks the designs that fit by
the cycles they would spend on the images the export ships (``golden_vectors.npz``), at the
trained mask:

- **the core**: its dense events at those lanes, times the blocks' activity (their
  accumulates on the images over the dense events at one lane). Ragged chunks and the
  fixed passes cost what they cost densely; the accumulates scale with the spikes.
- **the stem engine**: its exact cycle model (:meth:`StemPlan.image_cycles`, which the
  tests hold the engine to) on the golden model's spike maps of the images.

The slower of the two sets the pace (the stem overlaps the blocks of the image before).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stepvit.model.export import Export, StepvitError
from stepvit.model.export.vectors import load_golden_vectors


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


def sample_pace(export: Export, stem_lanes: range | None = None) -> SamplePace | None:
    """Return the pace of ``export`` on its golden-vector images, or None without them.

    Parameters
    ----------
    export : Export
        A validated export.
    stem_lanes : range, optional
        The stem lane counts to model (default 1 to the widest stage's channels).
    """
    try:
        vectors = load_golden_vectors(export)
    except StepvitError:
        return None
    # (torch only here: the picker without vectors needs no golden model)
    from stepvit.model.golden import GoldenModel

    golden = GoldenModel(export)
    result = golden.run(vectors.images)
    work = {key: value.numpy() for key, value in result.work.items()}
    if not export.arch.get("stem"):
        return SamplePace(len(vectors.images),
                          float((work["ac_ops"] + work["embed_ac_ops"]).mean()), {})
    from stepvit.rtl.stem_plan import StemPlan
    from stepvit.sim.stem_cycles import stem_maps

    rows = export.stem_modules
    mask = export.budget_mask(None)
    maps, _ = stem_maps(golden, vectors.images, mask)
    if stem_lanes is None:
        widest = max(stage.conv_shape[0] for stage in
                     StemPlan.from_export(export, lanes=1).stages)
        stem_lanes = range(1, widest + 1)
    # an image's passes and their inputs' bits do not depend on the lanes
    profiles = [StemPlan.from_export(export, lanes=1).input_profile(mask[:rows], image,
                                                                    image_maps)
                for image, image_maps in zip(vectors.images, maps)]
    stem = {}
    for lanes in stem_lanes:
        plan = StemPlan.from_export(export, lanes=lanes)
        stem[lanes] = float(np.mean([plan.profile_cycles(profile) for profile in profiles]))
    return SamplePace(len(vectors.images), float((work["ac_ops"] - work["stem_ac_ops"]).mean()),
                      stem)


__all__ = ["SamplePace", "sample_pace"]
