"""The picture of a training run: its curves and the time steps each module learned."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_training(history: list[dict[str, float]], metrics: dict[str, Any],
                  path: str | Path) -> None:
    """Write ``path`` (PNG): loss, accuracy and active steps per epoch, and the mask grid.

    Parameters
    ----------
    history : list of dict
        One entry per epoch with ``epoch``, ``loss``, ``train_accuracy``,
        ``test_accuracy`` and ``avg_timesteps``; a quantization-aware epoch has
        ``"quantization_aware": True`` and no ``train_accuracy`` (it is shaded).
    metrics : dict
        The run's metrics: ``timestep_mask``, ``timesteps_per_module``,
        ``timesteps_per_block``, ``t_max``, ``test_accuracy``, ``avg_timesteps``.
    path : str or Path
        Where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training machine
    import matplotlib.pyplot as plt

    epochs = [entry["epoch"] for entry in history]
    figure, axes = plt.subplots(1, 4, figsize=(18, 4))
    loss_axis, accuracy_axis, steps_axis, mask_axis = axes
    floating = [entry for entry in history if not entry.get("quantization_aware")]
    loss_axis.plot([entry["epoch"] for entry in floating], [entry["loss"] for entry in floating])
    aware_entries = [entry for entry in history if entry.get("quantization_aware")]
    aware = [entry["epoch"] for entry in aware_entries]
    if aware:  # plain cross-entropy on the emulation's logits: another loss
        loss_axis.plot(aware, [entry["loss"] for entry in aware_entries], "o",
                       label="quantization-aware (plain cross-entropy)")
        loss_axis.legend(loc="center right", fontsize="small")
    loss_axis.set(title="training loss", xlabel="epoch")
    trained = [entry for entry in history if "train_accuracy" in entry]
    accuracy_axis.plot([entry["epoch"] for entry in trained],
                       [entry["train_accuracy"] for entry in trained], label="train")
    accuracy_axis.plot(epochs, [entry["test_accuracy"] for entry in history], label="test")
    accuracy_axis.set(title="accuracy", xlabel="epoch")
    steps_axis.plot(epochs, [entry["avg_timesteps"] for entry in history])
    steps_axis.set(title="active time steps (mean over modules)", xlabel="epoch",
                   ylim=(0, metrics["t_max"] + 0.2))
    if aware:
        for axis in (loss_axis, accuracy_axis, steps_axis):
            axis.axvspan(min(aware) - 0.5, max(aware) + 0.5, color="0.9",
                         label="quantization-aware" if axis is accuracy_axis else None)
    accuracy_axis.legend()

    mask = metrics["timestep_mask"]
    modules = list(metrics["timesteps_per_module"])
    mask_axis.imshow(mask, cmap="Greens", vmin=0, vmax=1.4, aspect="auto")
    mask_axis.set_yticks(range(len(modules)),
                         [f"{name} ({count})" for name, count in
                          metrics["timesteps_per_module"].items()])
    mask_axis.set_xticks(range(metrics["t_max"]))
    mask_axis.set(xlabel="time step",
                  title=f"learned steps; per block {metrics['timesteps_per_block']}")
    figure.suptitle(f"test accuracy {metrics['test_accuracy']:.3f}, "
                    f"mean active steps {metrics['avg_timesteps']:.2f} of {metrics['t_max']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
