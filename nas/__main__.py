"""nas: neural-architecture search on Optuna and PyTorch, one command for the whole job.

  nas search     search a space: a Pareto front of accuracy x latency (python -m nas.search)
  nas report     a study's table, plots and report.html (python -m nas.report)
  nas dashboard  the Optuna dashboard on a study, on this machine (python -m nas.dashboard)
  nas export     a trial as standalone PyTorch code, retrained with --weights (python -m nas.export)
  nas space      describe a search space or sample from it (python -m nas.space)

'nas COMMAND --help' shows a command's options.
"""

from __future__ import annotations

import importlib
import sys

# Imported only when run: 'nas --help' need not load torch.
COMMANDS = {
    "search": "nas.search.cli",
    "report": "nas.report",
    "dashboard": "nas.dashboard",
    "export": "nas.export.cli",
    "space": "nas.space",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(
            f"error: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    command: int = importlib.import_module(COMMANDS[args[0]]).main(args[1:])
    return command


if __name__ == "__main__":
    sys.exit(main())
