"""python -m nas.dashboard: spec notes, the notes a real search writes, bad input, and the
study's pages rendered by a real headless Chromium."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import StudyRef
from optuna_dashboard._note import get_note_from_system_attrs  # how the dashboard reads notes

from nas.dashboard import DEFAULT_PORT, is_loopback, listen, main
from nas.model import ArchSpec, AttentionSpec, HeadSpec, InputSpec, StageSpec, StemSpec
from nas.search import make_storage, spec_markdown

ROOT = Path(__file__).resolve().parents[1]
# make_storage's heartbeat retry callback is experimental in Optuna; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_spec_markdown_is_a_table_of_the_stages() -> None:
    spec = ArchSpec(
        input=InputSpec(1, 28, 28),
        stem=StemSpec(32),
        stages=(
            StageSpec("residual", 32, depth=2, attention=AttentionSpec("softmax", heads=4)),
            StageSpec(
                "separable",
                64,
                kernel=5,
                attention=AttentionSpec("manet_pool", 2, 16, "learned", pool_stride=4),
                downsample="max",
            ),
            StageSpec("plain", 96, attention=AttentionSpec("channel", reduction=8)),
        ),
        global_pool="avgmax",
        head=HeadSpec(hidden=(128,), activation="gelu", dropout=0.1),
        classes=10,
    )
    attrs = {"summary": spec.summary(), "params": 123456, "flops": 25_700_000}
    attrs |= {"latency_ms": 1.5, "latency_iqr_ms": 0.02, "latency": {"batch": 1, "device": "cpu"}}
    text = spec_markdown(spec, attrs)
    lines = text.splitlines()
    # The summary as escaped text (the browser test sees it rendered back to itself).
    assert lines[0].startswith("#### stem32 \\| residual32x2 softmax(4) \\| ")
    assert lines[0].endswith(
        "manet\\_pool(2x16,s4,learned) ↓max \\| plain96x1 channel(r8) \\| avgmax \\| fc\\[128\\]→10"
    )
    assert "| 0 | residual | 32 | 2 | 3×3 | softmax 4×8 | – | 28×28 |" in lines
    assert (
        "| 1 | separable | 64 | 1 | 5×5 | manet_pool 2×16, kv pool 4, learned pos | max | 28×28 |"
        in lines
    )
    assert "| 2 | plain | 96 | 1 | 3×3 | channel, reduction 8 | – | 14×14 |" in lines
    assert "- **stages** relu · batch norm throughout" in lines
    assert "- **global pool** avgmax → 192 features" in lines
    assert "- **head** 192 → 128 → 10, gelu, dropout 0.1" in lines
    assert "**params** 123,456 · **FLOPs** 25.7 M · **latency** 1.500 ms" in text
    assert "(IQR 0.020, batch 1, device cpu)" in text
    # Before measurement (the first note of a trial): no measured line, no made-up numbers.
    assert "params" not in spec_markdown(spec, {})


def test_spec_markdown_shows_stored_strings_as_text() -> None:
    """Attrs come from a storage anyone may have edited: markup in them is shown as text,
    a newline cannot start a block of its own, and text where a number belongs is left out."""
    spec = ArchSpec(
        input=InputSpec(1, 8, 8),
        stem=StemSpec(8),
        stages=(StageSpec("plain", 8),),
        global_pool="avg",
        head=HeadSpec(),
        classes=2,
    )
    clean = spec_markdown(spec, {"baseline": "b", "latency_ms": 1.0, "latency": {"device": "cpu"}})
    attrs = {
        "summary": "<script>alert(1)</script>\n[click](javascript:alert(2)) ~~x~~ &lt;",
        "baseline": "<img src=x onerror=alert(3)>\n# owned",
        "latency_ms": 1.0,
        "latency_iqr_ms": "=1+1",  # not a number: no IQR, and no crash formatting it
        "latency": {"device": "<b>cpu</b>\r\n| x |"},
    }
    text = spec_markdown(spec, attrs)
    assert len(text.splitlines()) == len(clean.splitlines())
    lines = text.splitlines()
    assert lines[0] == (
        "#### \\<script\\>alert(1)\\</script\\> \\[click\\](javascript:alert(2)) "
        "\\~\\~x\\~\\~ \\&lt;"
    )
    assert (
        "Hand design **\\<img src=x onerror=alert(3)\\> \\# owned** (an enqueued baseline)."
        in lines
    )
    assert "**latency** 1.000 ms (device \\<b\\>cpu\\</b\\>  \\| x \\|)" in text
    assert "IQR" not in text


def notes(study: optuna.Study) -> dict[int, str]:
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {t.number: get_note_from_system_attrs(attrs, t._trial_id)["body"] for t in study.trials}


def test_the_search_writes_a_note_per_trial(digits_study: StudyRef) -> None:
    study = optuna.load_study(
        study_name=digits_study.name, storage=make_storage(digits_study.storage)
    )
    by_number = notes(study)
    measured = [t for t in study.trials if "latency_ms" in t.user_attrs]
    assert measured and all("arch" not in t.user_attrs for t in study.trials if t not in measured)
    for t in measured:  # the last note, written once params, FLOPs and latency were known
        spec = ArchSpec.from_dict(t.user_attrs["arch"])
        assert by_number[t.number] == spec_markdown(spec, t.user_attrs), t.number


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///{tmp}/missing/x.db", "no such file"),
        ("journal:{tmp}/missing/x.log", "no such file"),
        ("sqlite:///:memory:", "in-memory"),
        ("nonsense", "malformed storage URL"),
    ],
)
def test_bad_storage_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    assert main(["--storage", url.format(tmp=tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_ports(digits_study: StudyRef, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--storage", digits_study.storage, "--port", str(port)]) == 2
        assert f"127.0.0.1:{port} is in use" in capsys.readouterr().err
    # Without --port: 8080, or a free port when 8080 is taken (by us, if nobody else has it).
    with socket.socket() as default:
        with contextlib.suppress(OSError):
            default.bind(("127.0.0.1", DEFAULT_PORT))
            default.listen()
        server = listen(lambda env, start: [], "127.0.0.1", None, debug=False)
        server.server_close()
    assert server.server_port != DEFAULT_PORT
    assert f"port {DEFAULT_PORT} is in use; using {server.server_port}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[(h, True) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST")],
        *[(h, False) for h in ("0.0.0.0", "", "::", "10.0.0.1", "128.0.0.1", "example.org")],
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_host_beyond_loopback_warns_before_serving(digits_study: StudyRef) -> None:
    port = free_port()
    argv = ["--storage", digits_study.storage, "--host", "0.0.0.0", "--port", str(port)]
    dashboard = start_dashboard(*argv)
    try:
        wait_for(dashboard, f"http://127.0.0.1:{port}")  # it serves, on every interface
        dashboard.send_signal(signal.SIGINT)
        out, err = dashboard.communicate(timeout=20)
    finally:
        kill(dashboard)
    assert out == f"dashboard: http://0.0.0.0:{port}/\n"
    warning, *rest = err.splitlines()
    assert warning.startswith("warning: ") and rest == ["Ctrl-C to stop"], err
    assert f"0.0.0.0:{port}" in warning and "modify and delete studies" in warning


def start_dashboard(*argv: str) -> subprocess.Popen[str]:
    """``python -m nas.dashboard`` as a terminal starts it: Ctrl-C (SIGINT) stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "nas.dashboard", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
        # A shell's background jobs ignore SIGINT, and so would Python: Ctrl-C as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill(proc: subprocess.Popen[str]) -> None:
    """Kill the process and everything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def wait_for(dashboard: subprocess.Popen[str], base: str) -> list[dict[str, object]]:
    """Poll until the dashboard answers; its study list."""
    deadline = time.monotonic() + 60
    while True:
        assert dashboard.poll() is None, dashboard.communicate()[1]
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                return list(json.load(response)["study_summaries"])
        except OSError:
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.5)


def chromium_dom(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM after Chromium ran its scripts (the dashboard is a React app)."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    args += ["--disable-background-networking", f"--user-data-dir={profile}"]
    args += ["--virtual-time-budget=15000", "--dump-dom", url]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        dom, log = proc.communicate(timeout=60)
    finally:
        kill(proc)  # the renderer and zygote processes too
    assert proc.returncode == 0 and dom, log[-2000:]
    return dom


def test_the_study_renders_in_a_real_browser(digits_study: StudyRef, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    study = optuna.load_study(
        study_name=digits_study.name, storage=make_storage(digits_study.storage)
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard("--storage", digits_study.storage, "--port", str(port))
    try:
        studies = wait_for(dashboard, base)
        assert dashboard.stdout is not None
        assert dashboard.stdout.readline() == f"dashboard: {base}/\n"
        (study_id,) = [s["study_id"] for s in studies if s["study_name"] == digits_study.name]

        # The trial list of the study, with the last trial (an attention_cnn sample) open.
        last = study.trials[-1]
        page = f"{base}/dashboard/studies/{study_id}/trials?numbers={last.number}"
        dom = chromium_dom(chromium, page, tmp_path / "profile")
        text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))
        assert f"{digits_study.name} (id={study_id})" in text  # the study's breadcrumb
        for t in study.trials:
            assert f"Trial {t.number} " in text
        # The note, rendered from Markdown: the heading and a real table of the stages.
        assert last.user_attrs["summary"] in text
        assert re.search(r"<th[^>]*>attention</th>", dom), "the note's table did not render"
        assert f"{last.user_attrs['params']:,}" in text

        dashboard.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert dashboard.wait(20) == 0, dashboard.communicate()[1]
    finally:
        kill(dashboard)
