"""Every command through the ``nas`` command: a bad value is one line on stderr and exit 2,
and nothing is written; a bug (any other error) is exit 1; --debug adds the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas import command
from nas.__main__ import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def bad_values(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """For each command: arguments argparse accepts but the command refuses, and what the
    message must name."""
    db = f"sqlite:///{tmp}/missing.db"
    return {
        "search": (["--storage", f"sqlite:///{tmp}/s.db", "--epochs", "nan"], "--epochs"),
        "report": (["--storage", db, "--study-name", "x"], "missing.db"),
        "dashboard": (["--storage", db, "--port", "70000"], "70000"),
        "export": (
            ["--storage", db, "--study-name", "x", "--best", "--out", f"{tmp}/o", "--epochs", "-1"],
            "--epochs",
        ),
        "space": (["no_such_space"], "no_such_space"),
    }


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_bad_value_is_one_line_and_exit_2(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, named = bad_values(tmp_path)[name]
    assert main([name, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and named in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, no database made


def test_the_nas_command_lists_its_commands_and_refuses_an_unknown_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"nas {name}" in out for name in COMMANDS)
    assert main(["serach"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'serach'" in err and "search" in err


def test_another_error_is_exit_1_and_debug_adds_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    plain = argparse.Namespace(debug=False, verbosity=None)
    assert command.run(broken, plain) == 1
    err = capsys.readouterr().err
    assert err == "error: RuntimeError: disk on fire second line\n"
    assert command.run(broken, argparse.Namespace(debug=True, verbosity=None)) == 1
    err = capsys.readouterr().err
    assert (
        "Traceback" in err
        and err.splitlines()[-1] == "error: RuntimeError: disk on fire second line"
    )


def test_a_signal_is_exit_128_plus_its_number(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import signal

    class Stopped(KeyboardInterrupt):
        signum = signal.SIGTERM

    def stopped(args: argparse.Namespace) -> int:
        raise Stopped

    assert command.run(stopped, argparse.Namespace(debug=False, verbosity=None)) == 128 + 15
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("entry", [["-m", "nas", "space"], ["-m", "nas.space"]])
def test_python_dash_m_runs_the_same_command(entry: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, *entry, "attention_cnn", "--sample", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "error: --sample must be at least 1, got 0\n"
