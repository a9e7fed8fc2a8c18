import subprocess
import sys
import textwrap

import pytest

from stepvit.host import cli


@pytest.fixture
def failing_command(tmp_path, monkeypatch):
    """Register a command whose module raises a StepvitError and a plain bug."""
    (tmp_path / "fake_commands.py").write_text(
        textwrap.dedent(
            """
            from stepvit.model.export.errors import StepvitError

            def boom_arguments(parser):
                parser.add_argument("--bug", action="store_true")

            def boom(args):
                if args.bug:
                    raise ValueError("a bug keeps its traceback")
                raise StepvitError("the config file runs/x.yaml does not exist")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "boom", ("fake_commands", "fails on purpose"))


def test_user_error_is_one_line_and_exit_2(failing_command, capsys):
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "stepvit boom: error: the config file runs/x.yaml does not exist\n"


def test_bug_is_not_swallowed(failing_command):
    with pytest.raises(ValueError, match="traceback"):
        cli.main(["boom", "--bug"])


def test_missing_part_is_absent_not_faked(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "ghost", ("stepvit.host.no_such_module", "absent"))
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["ghost"])
    assert exit_.value.code == 2
    assert "stepvit: error: argument COMMAND: invalid choice: 'ghost'" in capsys.readouterr().err


def test_help_runs_as_a_console_command():
    done = subprocess.run(
        [sys.executable, "-m", "stepvit.host.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "usage: stepvit" in done.stdout
