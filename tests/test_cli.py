"""The CLI front door: help lists every command; unknown commands and LearnErrors exit 2."""

from learn.cli import COMMANDS, main
from tests.conftest import run_cli


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2():
    proc = run_cli("no-such-command")
    assert proc.returncode == 2
    assert "unknown command" in proc.stderr
