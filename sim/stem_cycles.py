"""The stem engine's cycles per image from the golden model's spike maps (no simulation).

The plan's cycle model (:meth:`~stepvit.rtl.stem_plan.StemPlan.image_cycles`) is exact: the
tests hold the engine's simulated cycles to it. So the cycles of many images at every
budget come from the golden model alone, against the accumulate lower bound of the engine's
parallelism (``k²·lanes`` accumulates a cycle)::

    python -m stepvit.sim.stem_cycles EXPORT --lanes 16 --images 256 \
        [--dataset fashion-mnist --data-dir DIR] [--all-steps]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from stepvit.model.data import load_dataset
from stepvit.model.export import Export, StepvitError, budget_mask_of, load_export
from stepvit.model.export.stem import lower_bound_parts
from stepvit.model.golden import GoldenModel
from stepvit.rtl.stem_plan import StemPlan


def stem_maps(golden: GoldenModel, images: np.ndarray, mask: np.ndarray
              ) -> tuple[list[dict[tuple[int, int], np.ndarray]], np.ndarray]:
    """Return each image's emitted spike maps per ``(module, step)`` and its stem accumulates.

    :meth:`GoldenModel.stem_emitted`, split by image.
    """
    maps, work = golden.stem_emitted(np.asarray(images), mask)
    per_image = [{key: value[i].numpy() for key, value in maps.items()}
                 for i in range(len(images))]
    return per_image, work.numpy()


def stem_split(export: Export, images: np.ndarray, budget: int | None,
               work: dict[str, np.ndarray], *, lanes: int, stem_lanes: int | None = None,
               batch: int = 500) -> dict[str, float]:
    """Return the stem's and the blocks' parts of an image's cycles at ``budget``, per image.

    ``stem_cycles_per_image``: the stem engine's cycles by its exact model (the cycles it is
    busy; it overlaps the blocks of the image before); ``stem_lower_bound_cycles`` and
    ``blocks_lower_bound_cycles``: the accumulate bounds of the two parts from the golden
    ``work`` of ``images`` (the stem's over ``ceil(k/s)²`` times its lanes, the blocks' over
    the core's). The stem runs through the golden model ``batch`` images at a time.
    """
    golden = GoldenModel(export)
    plan = StemPlan.from_export(export, lanes=stem_lanes or lanes)
    mask = export.budget_mask(budget)
    rows = len(plan.stages)
    cycles = []
    for first in range(0, len(images), batch):
        chunk = images[first:first + batch]
        maps, _ = stem_maps(golden, chunk, mask)
        cycles += [plan.image_cycles(mask[:rows], image, image_maps)
                   for image, image_maps in zip(chunk, maps)]
    blocks, stem = lower_bound_parts(export.arch, work, lanes, stem_lanes)
    return {"stem_cycles_per_image": float(np.mean(cycles)),
            "stem_lower_bound_cycles": float(stem.mean()),
            "blocks_lower_bound_cycles": float(blocks.mean())}


def stem_cycles(export_dir: str, *, lanes: int, images: np.ndarray,
                budgets: list[int] | None = None, mask: np.ndarray | None = None
                ) -> list[dict[str, Any]]:
    """Return per budget the stem engine's mean cycles, its lower bound and their ratio.

    Parameters
    ----------
    export_dir : str
        An export with a stem.
    lanes : int
        The engine's lanes.
    images : numpy.ndarray
        uint8 ``[B, C, H, W]``.
    budgets : list of int, optional
        Budgets (default ``1..T``).
    mask : numpy.ndarray, optional
        A full ``[modules, T]`` mask to run instead of the trained one (budgets cap it).

    Raises
    ------
    StepvitError
        If the export has no stem.
    """
    export = load_export(export_dir)
    if not export.arch.get("stem"):
        raise StepvitError(f"{export_dir}: the export has no convolutional stem")
    golden = GoldenModel(export)
    plan = StemPlan.from_export(export, lanes=lanes)
    rows = len(plan.stages)
    base = export.timestep_mask if mask is None else np.asarray(mask)
    rows_out = []
    for budget in budgets or list(range(1, export.t_max + 1)):
        capped = budget_mask_of(base, budget, export.stem_modules)
        maps, work = stem_maps(golden, images, capped)
        cycles = np.array([plan.image_cycles(capped[:rows], image, image_maps)
                           for image, image_maps in zip(images, maps)])
        bound = plan.accumulate_lower_bound(float(work.mean()))
        rows_out.append({"budget": budget, "cycles": float(cycles.mean()),
                         "accumulates": float(work.mean()), "lower_bound": bound,
                         "ratio": float(cycles.mean()) / bound if bound else None})
    return rows_out


def main(argv: list[str] | None = None) -> None:
    """Print the stem's cycles per budget as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--lanes", type=int, required=True)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--dataset", help="a data set name (its test split); else random images")
    parser.add_argument("--data-dir", default=".", help="where the data set's files are")
    parser.add_argument("--all-steps", action="store_true",
                        help="every module active at every step (the dense mask)")
    args = parser.parse_args(argv)
    export = load_export(args.export)
    if args.dataset:
        images = load_dataset(args.dataset, args.data_dir, "test")[0][:args.images].numpy()
    else:
        images = np.random.default_rng(0).integers(
            0, 256, size=(args.images, *export.arch["image_shape"]), dtype=np.uint8)
    mask = np.ones_like(export.timestep_mask) if args.all_steps else None
    for row in stem_cycles(args.export, lanes=args.lanes, images=images, mask=mask):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
