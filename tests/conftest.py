"""Fixtures of every test folder: the tiny random export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepvit.model.random_export import make_random_export

#: The tiny network most tests run: 4x4 images, patch 2, dim 8, 2 heads, depth 1, MLP 16,
#: 3 classes, T 3.
TINY = dict(image_shape=[1, 4, 4], patch=2, dim=8, heads=2, depth=1, mlp_dim=16,
            num_classes=3, t_max=3)


@pytest.fixture(scope="session")
def random_export() -> Callable[..., Path]:
    """Return ``make(out_dir, *, seed=0, **changes)``, which writes a random export into
    ``out_dir`` and returns the folder.

    The export has the tiny shape (:data:`TINY`); ``changes`` replace any keyword of
    :func:`stepvit.model.random_export.make_random_export` (a shape, a mask, the neuron).
    """

    def make(out_dir: Path, *, seed: int = 0, **changes: Any) -> Path:
        return make_random_export(out_dir, **{**TINY, "seed": seed, **changes})

    return make
