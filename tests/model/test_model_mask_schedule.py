"""The mask's schedule: what each batch does with the scores, and what a run guarantees."""

import pytest
import torch

from stepvit.model import train as train_module
from stepvit.model.config import validate_config
from stepvit.model.data import hold_out
from stepvit.model.export.errors import StepvitError
from stepvit.model.network import SpikingViT
from stepvit.model.train import (
    MaskPhase,
    choose_mask_on_validation,
    mask_schedule,
    project_mask,
    train_run,
    validation_loss,
)

WARMUP, LEARN, FROZEN = MaskPhase.WARMUP, MaskPhase.LEARN, MaskPhase.FROZEN


def training(**given):
    return validate_config({"training": {"epochs": 10, "penalty_warmup_epochs": 2,
                                         "freeze_mask_epochs": 3, **given}})["training"]


@pytest.mark.parametrize("epoch, steps, frozen, given, expected", [
    (0, 4.0, False, {}, WARMUP),                       # warm-up: the weights alone
    (1, 1.0, False, {"target_timesteps": 2.0}, WARMUP),  # the target counts after it
    (2, 4.0, False, {}, LEARN),
    (6, 1.0, False, {}, LEARN),                        # no target: the penalty goes on
    (6, 2.5, False, {"target_timesteps": 2.0}, LEARN),
    (6, 2.0, False, {"target_timesteps": 2.0}, FROZEN),  # within the target: frozen
    (7, 4.0, False, {}, FROZEN),                       # the freeze window
    (7, 4.0, False, {"target_timesteps": 2.0}, FROZEN),
    (3, 4.0, True, {}, FROZEN),                        # once frozen, frozen for good
    (0, 4.0, False, {"fixed_timesteps": True}, FROZEN),
])
def test_the_rule_of_each_batch(epoch, steps, frozen, given, expected):
    assert mask_schedule(epoch, steps, training(**given), frozen=frozen) is expected


@pytest.mark.slow
def test_the_scores_wait_for_the_warmup(tmp_path):
    # one warm-up epoch of two: the scores stay at their start (just above 0, where the task
    # loss alone would push some below), then the penalty moves them
    config = small_config(0, epochs=2, penalty=2.0, score_lr=1.0, freeze_mask_epochs=0,
                          score_init=0.01)
    train_run(config, tmp_path, progress=False)
    history = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["history"]
    assert history[0]["mask"] == [[1] * 4] * 4 and history[0]["avg_timesteps"] == 4.0
    assert history[1]["avg_timesteps"] < 4.0


def model_with_scores(scores):
    model = SpikingViT((1, 8, 8), 4, 8, 1, 1, 16, 10, 4)
    with torch.no_grad():
        model.timestep_scores.copy_(torch.tensor(scores))
    return model


def test_projection_drops_the_lowest_scores_and_keeps_a_step_per_module():
    model = model_with_scores([[0.9, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8],
                               [0.05, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    project_mask(model, 1.5)  # 4 modules x 1.5 = 6 steps of the 13 active
    # 0.2 to 0.7 go, then the first of the equal 1.0s; the module whose one step scores
    # 0.05 keeps it, and so does the module left with 0.8 alone
    assert model.timestep_mask().tolist() == [[1, 0, 0, 0], [0, 0, 0, 1],
                                              [1, 0, 0, 0], [0, 1, 1, 1]]
    assert (model.timestep_scores[model.timestep_mask() == 0] <= 0).all()
    project_mask(model, 1.0)
    assert model.timestep_mask().tolist() == [[1, 0, 0, 0], [0, 0, 0, 1],
                                              [1, 0, 0, 0], [0, 0, 0, 1]]
    project_mask(model, 0.5)  # below one step a module: every module keeps one
    assert model.timestep_mask().sum(dim=1).tolist() == [1, 1, 1, 1]


def test_projection_of_infinite_scores_ends():
    model = model_with_scores([[float("inf")] * 4] * 4)
    project_mask(model, 2.0)  # all tied: they go in index order, each module keeps one
    assert model.timestep_mask().tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 1],
                                              [1, 1, 1, 1]]


def test_a_fixed_t_run_keeps_every_step_whatever_the_target(tmp_path):
    # `stepvit train --fixed-timesteps` on a config with a step target: the baseline
    metrics = train_run(small_config(0, validation_fraction=0.1, epochs=1,
                                     penalty_warmup_epochs=0, freeze_mask_epochs=0,
                                     fixed_timesteps=True, target_timesteps=2.0),
                        tmp_path, progress=False)
    assert metrics["avg_timesteps"] == 4.0 and metrics["target_timesteps"] is None
    assert metrics["mask_choice_validation_losses"] == []


def small_config(seed, validation_fraction=0.0, **given):
    return validate_config({
        "name": "schedule",
        "data": {"validation_fraction": validation_fraction},
        "model": {"dim": 8, "heads": 1, "depth": 1, "mlp_dim": 16, "t_max": 4, "patch": 4},
        "training": {"epochs": 6, "batch_size": 128, "lr": 0.02, "seed": seed,
                     "penalty_warmup_epochs": 1, "freeze_mask_epochs": 2, **given}})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_run_reaches_its_target_and_freezes_its_mask_when_the_config_says(tmp_path, seed):
    # a strong penalty reaches the target inside the learning epochs: frozen there, and the
    # held-out images place the steps
    reached = train_run(small_config(seed, penalty=2.0, score_lr=1.0, target_timesteps=2.0,
                                     validation_fraction=0.1),
                        tmp_path / "reached", progress=False)
    history = torch.load(tmp_path / "reached" / "checkpoint.pt", weights_only=True)["history"]
    assert reached["avg_timesteps"] <= 2.0
    assert (reached["train_images"], reached["validation_images"]) == (1293, 144)
    losses = reached["mask_choice_validation_losses"]
    assert losses and all(later < earlier for earlier, later in zip(losses, losses[1:]))
    frozen_in = reached["mask_frozen_in_epoch"]
    assert 2 <= frozen_in <= 4  # after the warm-up, before the freeze window
    for entry in history:
        assert entry["mask_frozen"] == (entry["epoch"] >= frozen_in)
        if entry["epoch"] >= frozen_in:
            assert entry["mask"] == reached["timestep_mask"]  # fixed from then on
        if entry["epoch"] >= 2 and entry["epoch"] < frozen_in:
            assert entry["avg_timesteps"] > 2.0  # the first epoch within the target froze
    # no penalty: the target is reached by cutting the mask when the freeze window opens
    cut = train_run(small_config(seed, penalty=0.0, target_timesteps=1.5),
                    tmp_path / "cut", progress=False)
    assert cut["avg_timesteps"] <= 1.5
    assert cut["mask_frozen_in_epoch"] == 5
    assert all(steps >= 1 for steps in cut["timesteps_per_module"].values())


def test_the_validation_split_is_held_out_of_the_training_set():
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1, 1)
    labels = torch.arange(100) % 10
    (kept_images, kept_labels), (held_images, held_labels) = hold_out(
        images, labels, 0.1, seed=3)
    kept, held = kept_images.flatten().tolist(), held_images.flatten().tolist()
    assert len(held) == 10 and len(kept) == 90 and not set(kept) & set(held)
    assert kept_labels.tolist() == [value % 10 for value in kept]
    assert held_labels.tolist() == [value % 10 for value in held]
    assert hold_out(images, labels, 0.1, seed=3)[1][0].flatten().tolist() == held
    assert hold_out(images, labels, 0.1, seed=4)[1][0].flatten().tolist() != held
    assert len(hold_out(images, labels, 0.0, seed=3)[1][1]) == 0
    with pytest.raises(StepvitError, match=r"validation fraction must be in \[0, 1\), got 1.5"):
        hold_out(images, labels, 1.5, seed=0)
    with pytest.raises(StepvitError, match="leaves 0 of 100 training images out"):
        hold_out(images, labels, 0.001, seed=0)


def test_the_validation_split_moves_steps_where_they_lower_its_loss(monkeypatch):
    model = model_with_scores([[0.5, -0.5, -0.5, -0.5], [0.5, 0.5, 0.5, -0.5],
                               [0.5, 0.01, -0.5, -0.5], [0.5, 0.5, -0.5, -0.5]])
    wanted = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    seen = []

    def distance(model, validation, mask):  # a loss lowest at the wanted mask
        seen.append(int(mask.sum()))
        return float((mask - wanted).abs().sum())

    monkeypatch.setattr(train_module, "validation_loss", distance)
    losses = choose_mask_on_validation(model, (torch.zeros(1), torch.zeros(1)), moves=4)
    assert model.timestep_mask().tolist() == wanted.tolist()
    assert losses == [4.0, 2.0, 0.0]  # each move fixes two places; then none helps
    assert set(seen) == {8}  # every candidate keeps the work: as many steps as before


def test_a_move_never_empties_a_module(monkeypatch):
    model = model_with_scores([[0.5, -0.5, -0.5, -0.5], [0.5, 0.5, -0.5, -0.5],
                               [0.5, -0.5, -0.5, -0.5], [0.5, -0.5, -0.5, -0.5]])
    monkeypatch.setattr(train_module, "validation_loss",
                        lambda model, validation, mask: -float(mask[3].sum()))
    choose_mask_on_validation(model, (torch.zeros(1), torch.zeros(1)), moves=4)
    # only the second module can give a step: every other one has just one
    assert model.timestep_mask().sum(dim=1).tolist() == [1, 1, 1, 2]


def test_the_validation_loss_is_the_cross_entropy_under_the_mask():
    torch.manual_seed(0)
    model = model_with_scores(torch.ones(4, 4).tolist())
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(20) % 10
    mask = torch.tensor([[1, 1, 0, 0]] * 4)
    model.eval()
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(images, masks=mask), labels))
    model.train()
    assert validation_loss(model, (images, labels), mask) == pytest.approx(expected, rel=1e-6)
    assert model.training
