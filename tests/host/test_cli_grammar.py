"""Every ``stepvit`` command, a bad value for each path and budget option: one line, exit 2.

Each case runs in this process through :func:`stepvit.host.cli.main` and must end before
any work starts (no training, no simulation), so the whole walk takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stepvit.host import cli
from stepvit.model.export import load_export, parse_budgets
from stepvit.model.export.errors import StepvitError
from stepvit.model.export_cli import write_golden_vectors_of
from stepvit.model.golden import GoldenModel

T_MAX = 3
#: A folder no one can create.
UNWRITABLE = "/proc/stepvit/out"
#: Bad ``--budget`` values: below 1, above t_max, not a budget, an empty range.
BAD_BUDGETS = ("0", str(T_MAX + 1), "x", "3-1")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, random_export) -> dict[str, Path]:
    """An export with golden vectors, an (empty) run folder, an overlay folder, a config."""
    root = tmp_path_factory.mktemp("grammar")
    export_dir = random_export(root / "export", t_max=T_MAX)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    write_golden_vectors_of(export_dir / "golden_vectors.npz", GoldenModel(load_export(export_dir)),
                            torch.from_numpy(images), torch.zeros(2, dtype=torch.int64))
    overlay = root / "overlay"
    overlay.mkdir()
    run = root / "run"
    run.mkdir()
    config = root / "tiny.yaml"
    config.write_text("name: tiny\nmodel: {dim: 8, heads: 2, depth: 1, mlp_dim: 16, t_max: 3}\n")
    return {"export": export_dir, "overlay": overlay, "run": run, "config": config,
            "missing": root / "missing"}


def path_cases() -> list[tuple[str, list[str]]]:
    """(command, argv) with one bad path each; ``{name}`` stands for a fixture path."""
    return [
        ("train", ["--config", "{missing}"]),
        ("train", ["--out", UNWRITABLE]),
        ("export", ["{missing}"]),
        ("export", ["{run}", "--out", UNWRITABLE]),
        ("eval", ["{missing}"]),
        ("eval", ["{export}", "--dataset", "cifar10", "--data-dir", "{missing}"]),
        ("random-export", ["--config", "{missing}", "--out", "{missing}"]),
        ("random-export", ["--config", "{config}", "--out", UNWRITABLE]),
        ("rtl", ["{missing}", "--build", "{missing}"]),
        ("rtl", ["{export}", "--build", UNWRITABLE]),
        ("rtl", ["{export}", "--out", UNWRITABLE]),  # the old spelling
        ("synth", ["{missing}"]),
        ("synth", [UNWRITABLE]),
        ("sim", ["{missing}"]),
        ("sim", ["{export}", "--build", UNWRITABLE]),
        ("sim", ["{export}", "--out", UNWRITABLE]),
        ("bench", ["{missing}", "--backend", "golden"]),
        ("bench", ["{export}", "--backend", "golden", "--out", UNWRITABLE]),
        ("bench", ["{export}", "--build", UNWRITABLE]),
        ("bench", ["{export}", "--build-dir", UNWRITABLE]),  # the old spelling
        ("bench", ["{export}", "--backend", "pynq", "--overlay", "{missing}"]),
        ("run", ["--board", "pynq-z2", "{missing}", "--overlay", "{overlay}"]),
        ("run", ["--board", "pynq-z2", "{export}", "--overlay", "{missing}"]),
        ("run", ["--board", "pynq-z2", "{export}", "--overlay", "{overlay}", "--out",
                 UNWRITABLE]),
        ("overlay", ["{missing}", "--board", "pynq-z2", "--out", "{missing}"]),
        ("overlay", ["{export}", "--board", "pynq-z2", "--out", UNWRITABLE]),
        ("demo", ["--config", "{missing}", "--run", "{missing}"]),
        ("demo", ["--run", UNWRITABLE]),
        ("demo", ["--run", "{run}", "--build", UNWRITABLE]),
    ]


def budget_cases() -> list[tuple[str, list[str], str, str]]:
    """(command, argv, option spelling, value) for each budget command and bad budget."""
    commands = {
        "eval": ["{export}"],
        "sim": ["{export}", "--build", "{missing}"],
        "bench": ["{export}", "--backend", "golden", "--out", "{missing}"],
        "run": ["--board", "pynq-z2", "{export}", "--overlay", "{overlay}", "--out",
                "{missing}"],
    }
    return [(command, argv, option, value)
            for command, argv in commands.items()
            for option in ("--budget", "--budgets")
            for value in BAD_BUDGETS]


def one_error_line(capsys: pytest.CaptureFixture[str], files: dict[str, Path], command: str,
                   argv: list[str]) -> str:
    """Run ``stepvit command argv``; return its one stderr line, after checking its form."""
    filled = [item.format(**{name: str(path) for name, path in files.items()})
              for item in argv]
    assert cli.main([command, *filled]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = error.splitlines()
    assert len(lines) == 1, error
    assert lines[0].startswith(f"stepvit {command}: error: "), error
    return lines[0].removeprefix(f"stepvit {command}: error: ")


@pytest.mark.parametrize(("command", "argv"), path_cases())
def test_a_bad_path_is_one_line(files, capsys, command: str, argv: list[str]) -> None:
    message = one_error_line(capsys, files, command, argv)
    named = UNWRITABLE if UNWRITABLE in argv else str(files["missing"])
    assert named in message or "cifar10" in message


@pytest.mark.parametrize(("command", "argv", "option", "value"), budget_cases())
def test_a_bad_budget_is_one_line(files, capsys, command: str, argv: list[str], option: str,
                                  value: str) -> None:
    message = one_error_line(capsys, files, command, [*argv, option, value])
    with pytest.raises(StepvitError) as expected:
        parse_budgets(value, T_MAX)
    assert message == str(expected.value)  # the same message on every command


def test_a_path_left_untouched_by_a_refused_command(files, capsys) -> None:
    """A refused budget creates no output folder."""
    one_error_line(capsys, files, "bench", ["{export}", "--backend", "golden", "--budget", "0",
                                            "--out", "{missing}"])
    assert not files["missing"].exists()


def test_an_os_error_outside_the_users_paths_keeps_its_traceback(monkeypatch, tmp_path) -> None:
    """Only an OSError on a path the user gave becomes one line; others are bugs."""
    import argparse

    args = argparse.Namespace(command="x", out=tmp_path / "out")
    inside = OSError(13, "Permission denied", str(tmp_path / "out" / "a.json"))
    elsewhere = OSError(13, "Permission denied", "/etc/stepvit.json")
    assert cli._user_path_error(inside, args) == f"{tmp_path}/out/a.json: Permission denied"
    assert cli._user_path_error(elsewhere, args) is None


def test_help_documents_the_grammar_once(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for fragment in ("--budget B", "Default: all", "--build DIR",
                     "--out DIR", "--no-progress", "exit status 2"):
        assert fragment in text
