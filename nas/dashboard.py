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
page): the objective writes :func:`spec_markdown` as soon as the spec is sampled and
again once params, FLOPs and latency are measured, so a dashboard opened during a
search shows the structure as a table rather than the ``arch`` attr's JSON.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import sys
import warnings
from collections.abc import Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from nas.spec import ArchSpec, AttentionSpec
from nas.stored import markdown_text
from nas.study import StudyError, open_existing_storage

DEFAULT_PORT = 8080


# ----------------------------------------------------------------------------- notes


def spec_markdown(spec: ArchSpec, attrs: Mapping[str, Any]) -> str:
    """The spec as Markdown: the one-line summary, a table of stages, the rest as a list.

    ``attrs`` are the trial's user attrs; params, FLOPs and latency appear once measured.
    """
    # Plain text (escaped), not code: a long summary must wrap on the trial's page.
    lines = ["#### " + markdown_text(attrs.get("summary") or spec.summary()), ""]
    if attrs.get("baseline"):
        lines += [f"Hand design **{markdown_text(attrs['baseline'])}** (an enqueued baseline).", ""]
    # Spaces sample one activation and norm for the whole network: a column only if not.
    act_norm = sorted({_act_norm(s.activation, s.norm) for s in spec.stages})
    columns = ["stage", "block", "width", "depth", "kernel", "attention", "downsample", "map"]
    columns += ["act · norm"] if len(act_norm) > 1 else []
    # The dashboard pads cells little: centring short cells keeps neighbours apart.
    align = {"block": ":--", "attention": ":--"}
    lines += [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(align.get(c, ":-:") for c in columns) + "|",
    ]
    for i, (stage, (h, w)) in enumerate(zip(spec.stages, spec.resolutions(), strict=True)):
        cells = [
            str(i),
            stage.block,
            str(stage.width),
            str(stage.depth),
            f"{stage.kernel}×{stage.kernel}",
            _attention_cell(stage.attention, stage.width),
            "–" if stage.downsample == "none" else stage.downsample,
            f"{h}×{w}",
        ]
        cells += [_act_norm(stage.activation, stage.norm)] if len(act_norm) > 1 else []
        lines.append("| " + " | ".join(cells) + " |")
    stem, head = spec.stem, spec.head
    hidden = "".join(f"{n} → " for n in head.hidden)
    extras = f", {head.activation}" if head.hidden else ""
    extras += f", dropout {head.dropout:g}" if head.hidden and head.dropout else ""
    lines += [
        "",
        f"- **input** {spec.input.channels}×{spec.input.height}×{spec.input.width}, "
        f"{spec.classes} classes",
        f"- **stem** {stem.width} channels, {stem.kernel}×{stem.kernel} stride {stem.stride}, "
        + _act_norm(stem.activation, stem.norm),
        *([f"- **stages** {act_norm[0]} throughout"] if len(act_norm) == 1 else []),
        f"- **global pool** {spec.global_pool} → {spec.pooled_features()} features",
        f"- **head** {spec.pooled_features()} → {hidden}{spec.classes}{extras}",
    ]
    measured = []
    if isinstance(attrs.get("params"), int):
        measured.append(f"**params** {attrs['params']:,}")
    if isinstance(attrs.get("flops"), int | float):
        measured.append(f"**FLOPs** {attrs['flops'] / 1e6:.1f} M")
    if isinstance(attrs.get("latency_ms"), int | float):
        text = f"**latency** {attrs['latency_ms']:.3f} ms"
        how = attrs.get("latency")
        how = how if isinstance(how, dict) else {}
        iqr = attrs.get("latency_iqr_ms")
        details = [f"IQR {iqr:.3f}"] if isinstance(iqr, int | float) else []
        details += [
            f"{k} {markdown_text(how[k])}" for k in ("batch", "device", "threads") if k in how
        ]
        measured.append(text + (f" ({', '.join(details)})" if details else ""))
    if measured:
        lines.append("- " + " · ".join(measured))
    return "\n".join(lines) + "\n"


def _act_norm(activation: str, norm: str) -> str:
    return f"{activation} · " + ("no norm" if norm == "none" else f"{norm} norm")


def _attention_cell(a: AttentionSpec | None, width: int) -> str:
    if a is None:
        return "–"
    if a.op == "channel":
        return f"channel, reduction {a.reduction}"
    text = f"{a.op} {a.heads}×{a.head_dim or width // a.heads}"
    if a.op == "manet_conv":
        text += f", qkv {a.kernel}×{a.kernel}"
    if a.op == "manet_pool":
        text += f", kv pool {a.pool_stride}"
    return text + ("" if a.position == "none" else f", {a.position} pos")


def write_note(trial: optuna.Trial, spec: ArchSpec) -> None:
    """Save :func:`spec_markdown` as the trial's optuna-dashboard note.

    The dashboard keeps notes in the study's system attrs (per trial id, with a version),
    which every storage has, so this works from any worker on any storage.
    """
    # Imported here: optuna_dashboard pulls in scikit-learn (seconds), once per process.
    from optuna_dashboard import save_note

    save_note(trial, spec_markdown(spec, trial.user_attrs))


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nas.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument("--debug", action="store_true", help="tracebacks and a log line per request")
    args = p.parse_args(argv)

    if not args.debug:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if args.port is not None and not 0 <= args.port <= 65535:
            raise StudyError(f"--port must be in [0, 65535], got {args.port}")
        storage = open_existing_storage(args.storage)
        import optuna_dashboard  # after the checks: it takes seconds to import

        # wsgi() takes a built storage: ours waits on SQLite locks held by the search's
        # workers instead of failing. (run_server would serve one request at a time.)
        app = optuna_dashboard.wsgi(storage)
        server = listen(app, args.host, args.port, args.debug)
    except Exception as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
