"""python -m nas.dashboard: browse studies in optuna-dashboard, each trial's spec as a table.

    python -m nas.dashboard --storage sqlite:///studies/attention_cnn-fashion_mnist.db
    python -m nas.dashboard --storage postgresql://me@db/nas --port 8081

Prints ``dashboard: http://127.0.0.1:PORT/`` and serves until Ctrl-C. Without ``--port``
(or with ``--port 0``) it listens on 8080, or on a free port the system picks when 8080
is taken (another dashboard is running: the printed URL says which); a ``--port P``
that is taken is an error. It never creates a storage: a missing SQLite or journal
file is an error, not an empty dashboard. A ``--host`` beyond loopback gets a warning
first: optuna-dashboard has no login, and its API can modify and delete studies.

Every trial carries a Markdown note (optuna-dashboard's note API, shown on the trial's
page; written by the search, see :mod:`nas.search._notes`), so a dashboard opened during a
search shows the structure as a table rather than the ``arch`` attr's JSON.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from nas import command
from nas.search import StudyError, open_existing_storage

DEFAULT_PORT = 8080


# ----------------------------------------------------------------------------- server


class _Server(ThreadingMixIn, WSGIServer):
    """Threaded like optuna-dashboard's own CLI: the page fetches several APIs at once."""

    daemon_threads = True  # Ctrl-C never waits for an open request


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request drowns the URL; --debug shows them


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: a port only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name (it may resolve anywhere), or "" for every interface
        return False


def listen(app: Any, host: str, port: int | None, debug: bool) -> _Server:
    """Bind before printing the URL, so the URL printed is the one that answers."""
    handler = WSGIRequestHandler if debug else _QuietHandler

    def bind(number: int) -> _Server:
        return make_server(host, number, app, server_class=_Server, handler_class=handler)

    try:
        return bind(port or DEFAULT_PORT)
    except OSError as e:
        where = f"{host}:{port or DEFAULT_PORT}"
        if e.errno != errno.EADDRINUSE:
            raise StudyError(f"cannot listen on {where}: {e.strerror or e}") from None
        if port:
            raise StudyError(
                f"{where} is in use; pass another --port, or leave --port out to use a free one"
            ) from None
    server = bind(0)  # the system picks a free port
    print(f"port {DEFAULT_PORT} is in use; using {server.server_port}", file=sys.stderr)
    return server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    p.add_argument(
        "--port", type=int, help=f"default (or 0): {DEFAULT_PORT}, or a free port if it is taken"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="default 127.0.0.1 (this machine only); on any other address, anyone who can "
        "reach the port can modify and delete studies",
    )


def run(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 <= args.port <= 65535:
        raise StudyError(f"--port must be in [0, 65535], got {args.port}")
    storage = open_existing_storage(args.storage)
    import optuna_dashboard  # after the checks: it takes seconds to import

    # wsgi() takes a built storage: ours waits on SQLite locks held by the search's
    # workers instead of failing. (run_server would serve one request at a time.)
    app = optuna_dashboard.wsgi(storage)
    server = listen(app, args.host, args.port, args.debug)
    if not is_loopback(args.host):
        # optuna-dashboard has no login, and its API writes to the storage.
        print(
            f"warning: listening on {args.host}:{server.server_port}, beyond this machine: "
            "anyone who can reach this port can use the dashboard's API, which can modify "
            "and delete studies and trials",
            file=sys.stderr,
            flush=True,
        )
    print(f"dashboard: http://{args.host}:{server.server_port}/", flush=True)
    print("Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    return command.main("dashboard", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
