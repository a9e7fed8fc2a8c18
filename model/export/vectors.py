"""``golden_vectors.npz``: test images and their golden outputs at every budget.

``stepvit export`` writes it (the golden model's outputs); a board, the simulation and the
bench read it with :func:`load_golden_vectors`, the one reader, which checks every key and
shape against the export. Numpy only, so a board can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.reader import Export

#: The file name inside an export folder.
VECTORS_FILE = "golden_vectors.npz"

#: ``golden_vectors.npz`` (written by ``stepvit export``): key -> number of dimensions.
VECTOR_KEYS = {"images": 4, "labels": 1, "budgets": 1, "logits": 3, "predicted": 2,
               "spike_totals": 3, "ac_ops": 2, "embed_ac_ops": 2, "dense_ac_ops": 2}
#: The work counts among them, ``[T, n]`` each.
VECTOR_WORK_KEYS = ("ac_ops", "embed_ac_ops", "dense_ac_ops")
#: A work count only an export with a convolutional stem has (the stem's part of ``ac_ops``,
#: ``[T, n]``); vectors written before it was kept lack it.
STEM_WORK_KEY = "stem_ac_ops"
#: Optional keys of a stem export: per image, stem module and step, the set bits and the
#: positions with none of the spike map each module hands on at the trained mask (``[n,
#: stem modules, T]``, 0 at inactive steps), from which the stem engine's cycle model counts
#: an image's cycles without the golden model (rtl/pace.py, the board picker).
STEM_MAP_KEYS = ("stem_map_bits", "stem_map_empty")


@dataclass
class GoldenVectors:
    """The export's golden vectors: test images and their golden outputs at every budget.

    Attributes
    ----------
    images : numpy.ndarray
        ``uint8 [n, C, H, W]``.
    labels : numpy.ndarray
        ``[n]``.
    budgets : list of int
        The budgets of the first axis of the output arrays.
    outputs : dict of str to numpy.ndarray
        ``logits [T, n, K]``, ``predicted [T, n]``, ``spike_totals [T, n, layers]``,
        ``ac_ops``, ``embed_ac_ops`` and ``dense_ac_ops`` ``[T, n]``, and ``stem_ac_ops``
        and :data:`STEM_MAP_KEYS` where the vectors have them.
    """

    images: np.ndarray
    labels: np.ndarray
    budgets: list[int]
    outputs: dict[str, np.ndarray]


def load_golden_vectors(export: Export) -> GoldenVectors:
    """Read and check ``golden_vectors.npz`` of ``export``.

    Raises
    ------
    StepvitError
        If the file is missing, lacks a key, or its shapes do not fit the export.
    """
    path = Path(export.path) / VECTORS_FILE
    if not path.is_file():
        raise StepvitError(f"{path} is missing: `stepvit export` writes it (a board cannot run "
                           f"the golden model)")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, ndim in VECTOR_KEYS.items():
        if key not in arrays:
            raise StepvitError(f"{path.name}: missing key {key!r}")
        if arrays[key].ndim != ndim:
            raise StepvitError(f"{path.name}: {key}: expected {ndim} dimensions, "
                               f"got shape {list(arrays[key].shape)}")
    images, budgets = arrays["images"], [int(b) for b in arrays["budgets"]]
    count = images.shape[0]
    expected = {
        "images": (count, *export.arch["image_shape"]),
        "labels": (count,),
        "logits": (len(budgets), count, export.arch["num_classes"]),
        "predicted": (len(budgets), count),
        "spike_totals": (len(budgets), count, len(export.layer_names())),
        **{key: (len(budgets), count) for key in (*VECTOR_WORK_KEYS, STEM_WORK_KEY)},
        **{key: (count, export.stem_modules, export.t_max) for key in STEM_MAP_KEYS},
    }
    for key, shape in expected.items():
        if key in arrays and tuple(arrays[key].shape) != shape:
            raise StepvitError(f"{path.name}: {key}: expected shape {list(shape)}, "
                               f"got {list(arrays[key].shape)}")
    if images.dtype != np.uint8:
        raise StepvitError(f"{path.name}: images: expected uint8, got {images.dtype}")
    outputs = {key: arrays[key].astype(np.int64) for key in
               ("logits", "predicted", "spike_totals", *VECTOR_WORK_KEYS, STEM_WORK_KEY,
                *STEM_MAP_KEYS) if key in arrays}
    return GoldenVectors(images=images, labels=arrays["labels"].astype(np.int64),
                         budgets=budgets, outputs=outputs)


def write_golden_vectors(path: str | Path, images: np.ndarray, labels: np.ndarray,
                         budgets: list[int], outputs: dict[str, np.ndarray]) -> None:
    """Write ``golden_vectors.npz``.

    Parameters
    ----------
    path : path
        The file to write (``EXPORT/golden_vectors.npz``).
    images : numpy.ndarray
        ``uint8 [n, C, H, W]``.
    labels : numpy.ndarray
        ``[n]``.
    budgets : list of int
        ``1..T`` (budget ``T`` is the trained mask): the first axis of every output.
    outputs : dict of str to numpy.ndarray
        ``logits [T, n, K]``, ``predicted [T, n]``, ``spike_totals [T, n, layers]`` (SPEC.md
        section 1 order) and the work ``ac_ops``, ``embed_ac_ops``, ``dense_ac_ops``
        ``[T, n]`` (a board has no golden model to count them), and ``stem_ac_ops`` and
        :data:`STEM_MAP_KEYS` for an export with a convolutional stem.
    """
    missing = sorted(set(VECTOR_KEYS) - {"images", "labels", "budgets"} - set(outputs))
    if missing:
        raise ValueError(f"golden vectors without {', '.join(missing)}")
    np.savez(path, images=np.asarray(images, dtype=np.uint8),
             labels=np.asarray(labels, dtype=np.int64),
             budgets=np.asarray(budgets, dtype=np.int64),
             **{key: np.asarray(value, dtype=np.int64) for key, value in outputs.items()})
