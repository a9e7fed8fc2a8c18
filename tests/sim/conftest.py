"""The tiny export the sim tests share: one definition for Icarus, Verilator and the bulk path."""

from __future__ import annotations

import pytest

from stepvit.model.export import Export, load_export

#: Image shape of the tiny export.
SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, random_export) -> Export:
    """A random export: 4x4 images, patch 2, dim 8, 2 heads, depth 1, MLP 16, 3 classes, T 3."""
    return load_export(random_export(tmp_path_factory.mktemp("export"), image_shape=SHAPE,
                                     seed=5))
