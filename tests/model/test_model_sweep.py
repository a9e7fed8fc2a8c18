import json

import pytest

from stepvit.model.config import validate_config
from stepvit.model.export.errors import StepvitError
from stepvit.model.sweep import format_table, run_sweep, sweep_arms


def tiny_config():
    return validate_config({
        "name": "tiny",
        "model": {"dim": 8, "heads": 1, "depth": 1, "mlp_dim": 16, "t_max": 4},
        "training": {"epochs": 1, "batch_size": 128, "lr": 0.02, "penalty": 0.1,
                     "target_timesteps": 1.5},
    })


def test_arms_vary_only_what_they_name():
    arms = sweep_arms(tiny_config(), penalties=[0.5], targets=[2.0], fixed=[1, 3])
    assert [(name, kind) for name, kind, _ in arms] == [
        ("learned-p0.5", "learned"), ("learned-t2", "learned"),
        ("fixed-T1", "fixed"), ("fixed-T3", "fixed")]
    penalty, target, fixed_one, fixed_three = (config for _, _, config in arms)
    # a penalty arm has no step target: the penalty alone decides the steps
    assert penalty["training"]["penalty"] == 0.5
    assert penalty["training"]["target_timesteps"] == 0.0
    assert target["training"]["target_timesteps"] == 2.0
    assert target["training"]["penalty"] == 0.1
    assert fixed_one["model"]["t_max"] == 1 and fixed_three["model"]["t_max"] == 3
    assert fixed_three["training"]["fixed_timesteps"]
    # the schedule is the config's in every arm
    for config in (penalty, target, fixed_one, fixed_three):
        assert config["training"]["epochs"] == 1 and config["training"]["lr"] == 0.02
        assert config["name"].startswith("tiny-")


def test_an_empty_sweep_or_a_zero_t_is_refused():
    with pytest.raises(StepvitError, match="at least one of --penalties, --targets, --fixed"):
        sweep_arms(tiny_config(), penalties=[], targets=[], fixed=[])
    with pytest.raises(StepvitError, match=r"--fixed: every T must be >= 1, got \[0\]"):
        sweep_arms(tiny_config(), penalties=[], targets=[], fixed=[0])


def test_sweep_trains_exports_measures_and_reuses(tmp_path):
    rows = run_sweep(tiny_config(), tmp_path, penalties=[0.2], targets=[], fixed=[2],
                     images=40, progress=False)
    assert [row["arm"] for row in rows] == ["learned-p0.2", "fixed-T2"]
    fixed = rows[1]
    assert fixed["avg_timesteps"] == 2.0 and fixed["t_max"] == 2
    for row in rows:
        assert (tmp_path / row["arm"] / "export" / "manifest.yaml").is_file()
        assert 0 <= row["integer_accuracy"] <= 1 and row["images"] == 40
        # the images both classify right agree: agreement >= float + integer - 1
        assert row["agreement"] >= row["float_accuracy"] + row["integer_accuracy"] - 1 - 1e-9
        assert row["ac_ops"] > 0
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written["rows"] == rows
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert "fixed-T2" in format_table(rows)
    stamp = (tmp_path / "fixed-T2" / "checkpoint.pt").stat().st_mtime
    again = run_sweep(tiny_config(), tmp_path, penalties=[0.2], targets=[], fixed=[2],
                      images=40, progress=False)
    assert (tmp_path / "fixed-T2" / "checkpoint.pt").stat().st_mtime == stamp  # reused
    assert [row["integer_accuracy"] for row in again] == [row["integer_accuracy"]
                                                          for row in rows]


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0", "--fixed", "1"], "--epochs must be >= 1, got 0"),
    (["--penalties", "0.1,x"], "--penalties must be a comma-separated list of floats"),
    (["--fixed", "2,-1"], "--fixed must not hold a negative value"),
    ([], "give at least one of --penalties, --targets, --fixed"),
])
def test_bad_sweep_options_are_one_line(tmp_path, capsys, arguments, message):
    from stepvit.host import cli

    assert cli.main(["sweep", "--out", str(tmp_path / "sweep"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepvit sweep: error: ") and message in err and err.count("\n") == 1
