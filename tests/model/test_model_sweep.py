import io
import json
import shlex

import pytest

from stepvit.model.config import validate_config
from stepvit.model.export.errors import StepvitError
from stepvit.model.sweep import (
    SweepRun,
    format_table,
    parse_seeds,
    run_sweep,
    sweep_arms,
    sweep_runs,
    train_in_parallel,
)
from stepvit.model.train import read_checkpoint


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
    result = run_sweep(tiny_config(), tmp_path, penalties=[0.2], targets=[], fixed=[2],
                       images=40, progress=False)
    rows = result["rows"]
    assert [(row["arm"], row["seed"]) for row in rows] == [("learned-p0.2", 0), ("fixed-T2", 0)]
    fixed = rows[1]
    assert fixed["avg_timesteps"] == 2.0 and fixed["t_max"] == 2
    for row in rows:
        assert (tmp_path / row["arm"] / "seed0" / "export" / "manifest.yaml").is_file()
        assert 0 <= row["integer_accuracy"] <= 1 and row["images"] == 40
        # the images both classify right agree: agreement >= float + integer - 1
        assert row["agreement"] >= row["float_accuracy"] + row["integer_accuracy"] - 1 - 1e-9
        assert row["ac_ops"] > 0
    written = json.loads((tmp_path / "sweep.json").read_text())
    assert written["rows"] == rows and written["missing"] == []
    assert [arm["arm"] for arm in written["arms"]] == ["learned-p0.2", "fixed-T2"]
    assert written["arms"][1]["integer_accuracy"] == {
        "mean": fixed["integer_accuracy"], "std": None, "n": 1}
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert "fixed-T2" in format_table(rows)
    stamp = (tmp_path / "fixed-T2" / "seed0" / "checkpoint.pt").stat().st_mtime
    again = run_sweep(tiny_config(), tmp_path, penalties=[0.2], targets=[], fixed=[2],
                      images=40, progress=False)
    assert (tmp_path / "fixed-T2" / "seed0" / "checkpoint.pt").stat().st_mtime == stamp
    assert [row["integer_accuracy"] for row in again["rows"]] == [
        row["integer_accuracy"] for row in rows]


def test_seeds_read_the_budget_grammar():
    assert parse_seeds("0-2,5", 7) == [0, 1, 2, 5]
    assert parse_seeds(None, 7) == [7]
    with pytest.raises(StepvitError, match="--seeds: expected a seed S, a list S1,S2 or a "
                                           "range A-B, got 'x'"):
        parse_seeds("x", 0)
    with pytest.raises(StepvitError, match="--seeds: the range '3-1' is empty"):
        parse_seeds("3-1", 0)


def test_print_commands_then_gather_what_finished(tmp_path, capsys):
    from stepvit.host import cli

    out = tmp_path / "sweep"
    options = ["sweep", "--fixed", "1", "--seeds", "0-1", "--out", str(out), "--epochs", "1",
               "--images", "20", "--no-progress"]
    assert cli.main([*options, "--print-commands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == (out / "commands.txt").read_text().strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("stepvit train --config ") for line in lines)
    assert f"--out {out / 'fixed-T1' / 'seed1'} " in lines[1] and " && stepvit export " in lines[1]
    # run the first line as a cluster would, without the shell: the second stays missing
    for command in lines[0].split(" && "):
        assert cli.main(shlex.split(command)[1:]) == 0
    capsys.readouterr()
    assert cli.main([*options, "--gather"]) == 0
    captured = capsys.readouterr()
    written = json.loads((out / "sweep.json").read_text())
    assert [(row["arm"], row["seed"]) for row in written["rows"]] == [("fixed-T1", 0)]
    assert written["missing"] == [str(out / "fixed-T1" / "seed1")]
    assert "1 run(s) not finished" in captured.err
    assert not (out / "fixed-T1" / "seed1" / "checkpoint.pt").exists()  # gather trains nothing
    # the first run finished: it is no longer printed
    assert cli.main([*options, "--print-commands"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


@pytest.mark.slow
def test_parallel_jobs_train_every_run_in_its_own_process(tmp_path):
    runs = sweep_runs(tiny_config(), tmp_path, penalties=[], targets=[], fixed=[1],
                      seeds=[0, 1])
    train_in_parallel(runs, 2, 0, log=io.StringIO())
    for run in runs:
        assert run.finished() and (run.folder / "export" / "manifest.yaml").is_file()
        assert read_checkpoint(run.folder / "checkpoint.pt")["config"]["training"]["seed"] \
            == run.seed


def test_a_failing_parallel_run_is_named(tmp_path, monkeypatch):
    runs = sweep_runs(tiny_config(), tmp_path, penalties=[], targets=[], fixed=[1], seeds=[3])
    monkeypatch.setattr(SweepRun, "commands", lambda self, epochs: [
        ["stepvit", "train", "--config", str(tmp_path / "absent.yaml")]])
    with pytest.raises(StepvitError, match=r"1 run\(s\) failed: .*seed3 \(see its train\.log\)"):
        train_in_parallel(runs, 2, 0, log=io.StringIO())
    assert "absent.yaml" in (runs[0].folder / "train.log").read_text()


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0", "--fixed", "1"], "--epochs must be >= 1, got 0"),
    (["--penalties", "0.1,x"], "--penalties must be a comma-separated list of floats"),
    (["--fixed", "2,-1"], "--fixed must not hold a negative value"),
    ([], "give at least one of --penalties, --targets, --fixed"),
    (["--fixed", "1", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--fixed", "1", "--seeds", "2-1"], "--seeds: the range '2-1' is empty"),
])
def test_bad_sweep_options_are_one_line(tmp_path, capsys, arguments, message):
    from stepvit.host import cli

    assert cli.main(["sweep", "--out", str(tmp_path / "sweep"), *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stepvit sweep: error: ") and message in err and err.count("\n") == 1
