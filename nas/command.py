"""What every command (``nas search``, ``nas report``, ...) shares: its parser with
``--debug`` and ``--verbosity``, one-line error messages, and its exit codes.

Exit codes: 0 done; 2 a user error (a :class:`NasError`, or a flag argparse refuses: its own
code); 1 anything else (a bug or the machine: the message says what); 128+N when stopped
by signal N, as a shell reports it. ``--debug`` adds the traceback, not another code.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Callable

import optuna

from nas.errors import NasError
from nas.stored import printable

USER_ERROR = 2
OTHER_ERROR = 1

VERBOSITY = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser, with the options every command has."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common(p)
    return p


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="tracebacks, and Optuna's logs at info")
    p.add_argument(
        "--verbosity",
        choices=tuple(VERBOSITY),
        help="Optuna's log level (default: warning; info with --debug)",
    )


def main(
    name: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Command ``name`` run as ``python -m nas.NAME``: parse ``argv``, then :func:`run`."""
    return run(body, parse(name, doc, add_arguments, argv))


def parse(
    name: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    argv: list[str] | None,
) -> argparse.Namespace:
    p = parser(f"nas {name}", doc)
    add_arguments(p)
    return p.parse_args(argv)


def run(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``body(args)`` with the common logging, and any error it raises as one line on stderr
    and its exit code."""
    level = args.verbosity or ("info" if args.debug else "warning")
    optuna.logging.set_verbosity(VERBOSITY[level])
    if not args.debug:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return body(args)
    except KeyboardInterrupt as e:  # a signal a command turned into one (see nas.search)
        print("\ninterrupted", file=sys.stderr)
        return 128 + int(getattr(e, "signum", signal.SIGINT))
    except Exception as e:
        if args.debug:
            traceback.print_exc()  # then the same line and code as without
        code = USER_ERROR if isinstance(e, NasError) else OTHER_ERROR
        kind = "" if code == USER_ERROR else f"{type(e).__name__}: "
        print(f"error: {kind}{one_line(e)}", file=sys.stderr)
        return code


def one_line(e: BaseException) -> str:
    """An error's message on one line, with stored text inside shown inertly."""
    return printable(" ".join(str(e).split("\n")).strip()) or type(e).__name__
