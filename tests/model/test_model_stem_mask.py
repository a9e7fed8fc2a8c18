"""The stem's learned mask rows nest, and the mask projection keeps every module a step."""

from __future__ import annotations

import torch

from stepvit.model.network import SpikingViT
from stepvit.model.train import project_mask

STEM = {"stages": [{"channels": 4, "pool": "before"}, {"channels": 8}], "rpe": True}


def stem_model(scores: list[list[float]]) -> SpikingViT:
    model = SpikingViT((1, 8, 8), 2, 8, 2, 1, 16, 3, 4, stem=STEM)
    with torch.no_grad():
        model.timestep_scores.copy_(torch.tensor(scores))
    return model


def test_a_stem_module_runs_a_step_only_where_the_one_before_it_does() -> None:
    """The stem is a chain within a step: stage 1 at t needs stage 0 at t, the RPE stage 1."""
    model = stem_model([[1, 1, -1, 1],     # stem.0
                        [1, -1, 1, 1],     # stem.1: step 2 has no input
                        [1, 1, 1, -1],     # stem.rpe: step 1 (stage 1 off), step 3 (own)
                        [1, 1, 1, 1], [-1, 1, 1, 1], [1, -1, -1, 1]])
    # and the block and the head run only where the stem hands on tokens (step 0)
    assert model.timestep_mask().tolist() == [[1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0],
                                              [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    # the forward pass runs the nested mask; a mask given explicitly runs as it is
    assert torch.equal(model.step_masks().detach().to(torch.int64), model.timestep_mask())
    given = torch.ones(6, 4)
    given[0, 0] = 0
    assert torch.equal(model.step_masks(given), given)


def test_the_straight_through_gradient_reaches_a_nested_stem_score() -> None:
    model = stem_model([[1.0] * 4] * 6)
    model.train()
    model(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)).sum().backward()
    assert bool((model.timestep_scores.grad[:3] != 0).any(dim=1).all())


def test_projection_counts_the_nested_mask_and_keeps_every_module_a_step() -> None:
    model = stem_model([[3, 0.5, 2, 2], [3, 2, 0.4, 2], [3, 2, 2, 0.3],
                        [2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]])
    project_mask(model, 2.0)
    mask = model.timestep_mask()
    assert mask.sum(dim=1).double().mean() <= 2.0
    assert bool((mask.sum(dim=1) >= 1).all())
    # the scores read as the mask that runs: no step left on that the nesting turns off
    assert torch.equal((model.timestep_scores > 0).to(torch.int64), mask)
