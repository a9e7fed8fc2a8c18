"""The benchmark's picture: accuracy and latency against the time-step budget.

matplotlib is not on a board's Python: it is imported here, lazily, and without it the
picture is skipped with a note rather than failing the benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def plot_bench(report: dict[str, Any], path: str | Path) -> Path | None:
    """Draw accuracy, latency and work per budget into a PNG at ``path``.

    Parameters
    ----------
    report : dict
        The benchmark report: ``rows`` (one per budget), ``backend``, ``export``,
        ``clock_mhz``.
    path : path
        The PNG to write.

    Returns
    -------
    Path or None
        ``path``, or ``None`` when matplotlib is missing (a note goes to stderr).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no bench.png (the JSON has every figure)",
              file=sys.stderr)
        return None
    rows = report["rows"]
    budgets = [row["budget"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    accuracies = [row["accuracy"] for row in rows]
    if any(value is not None for value in accuracies):
        left.plot(budgets, [100 * (value or 0) for value in accuracies], "o-", color="tab:blue")
    else:
        left.text(0.5, 0.5, "no accuracy (untrained export)", ha="center",
                  transform=left.transAxes)
    left.set_ylim(0, 100)
    left.set_xlabel("time-step budget B")
    left.set_ylabel("accuracy (%)", color="tab:blue")
    left.set_xticks(budgets)
    left.grid(alpha=0.3)
    if all(row["latency_us"] is not None for row in rows):
        latency_axis = left.twinx()
        latency_axis.plot(budgets, [row["latency_us"] for row in rows], "s--", color="tab:red",
                          label="loaded (behind the images in flight)")
        latency_axis.plot(budgets, [row["idle_latency_us"] for row in rows], "^:",
                          color="tab:orange", label="one image, idle accelerator")
        latency_axis.legend(loc="lower right", fontsize="small")
        latency_axis.set_ylim(bottom=0)
        latency_axis.set_ylabel(f"latency (µs at {report['clock_mhz']:g} MHz)", color="tab:red")
    left.set_title(f"{report['backend']} backend: accuracy and latency")
    if all("stem_ac_ops_per_image" in row for row in rows):
        stem = [row["stem_ac_ops_per_image"] for row in rows]
        right.bar(budgets, stem, color="tab:olive", label="stem accumulates")
        right.bar(budgets, [row["transformer_ac_ops_per_image"] for row in rows], bottom=stem,
                  color="tab:green", label="transformer accumulates")
    elif all("ac_ops_per_image" in row for row in rows):
        right.bar(budgets, [row["ac_ops_per_image"] for row in rows], color="tab:green",
                  label="accumulates")
    if all("ac_ops_per_image" in row for row in rows):
        if "dense_ac_ops_per_image" in rows[0]:
            right.axhline(rows[0]["dense_ac_ops_per_image"], color="gray", linestyle=":",
                          label="dense (every step, every spike)")
        right.set_ylabel("accumulates per image")
        right.legend(loc="center left")
    right.set_xlabel("time-step budget B")
    right.set_xticks(budgets)
    right.set_title("work per image")
    figure.suptitle(str(report.get("export", "")), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
