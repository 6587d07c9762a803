"""python -m nas.export on studies whose every stored value is hostile: model.py stays ours.

Each example writes a study into one real SQLite storage with arbitrary values (quotes,
backslashes, line breaks of every kind, NUL, surrogates where JSON attrs hold them, NaN,
huge ints, nested lists and dicts) in every attr the export reads, exports it, and checks
that ``model.py`` parses to exactly the top-level statements of a clean export, that the
README's stored text is escaped, and (a few examples) that importing ``model.py`` in a
fresh interpreter creates no file.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.export.cli import main
from nas.model import Task
from nas.search import load_space
from nas.stored import MARKDOWN_SPECIAL

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = load_space("seed_cnn").spec(Task("digits", "image", 1, 8, 8, 10)).to_dict()
CLEAN_STUDY = {"dataset": "digits", "space": "seed_cnn", "mean": [0.3], "std": [0.37]}
CLEAN_TRIAL = {
    "epochs_done": 0.2992874109263658,
    "device": {"cpu": "AMD EPYC"},
    "latency": {"batch": 1, "threads": 1, "device": "cpu"},
    "latency_ms": 0.5,
    "latency_iqr_ms": 0.01,
    "params": 1234,
    "flops": 56789,
    "summary": "stem64 | plain64x1 ↓max | flatten | fc[512]→10",
    "seed": 0,
}

# Strings written to get out of a docstring, a markdown paragraph or a line.
PAYLOADS = [
    '"""\nopen("pwned", "w").close()\n"""',
    "'''\nopen('pwned', 'w').close()\n'''",
    '\\"""; open("pwned", "w")  #',
    "\\",
    '"',
    "\\N",
    "\x00",
    "\ud800",
    "\r\nimport os\r\n",
    "\u2028import os",
    "\x0cimport os",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    "`code` | cell |",
    "\u202eevil",
]
# Any text, surrogates included: JSON attrs hold them (study names, UTF-8 columns, do not).
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
NAME = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(PAYLOADS),
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
HOSTILE = st.one_of(st.sampled_from(PAYLOADS), TEXT, JSON)
NUMBERS = st.one_of(st.just([0.3]), st.lists(SCALAR, max_size=2), HOSTILE)


# Attrs whose bad values the export refuses; an example spoils at most one of them, so
# that most examples get through to model.py.
GUARDED = {
    "dataset": (st.one_of(st.just("digits"), TEXT, st.sampled_from(PAYLOADS)), HOSTILE),
    "mean": (st.just([0.3]), NUMBERS),
    "std": (st.just([0.37]), NUMBERS),
    "attention_budget_mb": (st.one_of(st.none(), st.floats(1e-300, 1024)), HOSTILE),
}


@st.composite
def study_attrs(draw: st.DrawFn) -> dict[str, Any]:
    spoiled = draw(st.sampled_from([None, None, None, *GUARDED]))
    attrs = {key: draw(bad if key == spoiled else good) for key, (good, bad) in GUARDED.items()}
    for key in ("space", "seed", "text_column", "label_column", "objectives"):
        attrs[key] = draw(HOSTILE)
    return attrs


TRIAL_KEYS = (
    *("epochs_done", "latency_ms", "latency_iqr_ms", "params", "flops", "summary"),
    *("seed", "reason", "train_status"),
)


def trial_attrs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            **dict.fromkeys(TRIAL_KEYS, HOSTILE),
            "device": st.one_of(st.fixed_dictionaries({"cpu": HOSTILE}), HOSTILE),
            "latency": st.one_of(st.fixed_dictionaries({"batch": HOSTILE}), HOSTILE),
        }
    )


_numbers = itertools.count()


def write_study(storage: str, name: str, study: dict[str, Any], trial: dict[str, Any]) -> str:
    """A study in ``storage`` with these attrs and one complete trial (number 0)."""
    unique = f"{name}#{next(_numbers)}"  # names repeat across examples
    s = optuna.create_study(study_name=unique, storage=storage, directions=["maximize", "minimize"])
    for key, value in study.items():
        if value is not None:
            s.set_user_attr(key, value)
    s.add_trial(
        optuna.trial.create_trial(
            values=[0.9, 0.5], params={}, distributions={}, user_attrs={"arch": SPEC, **trial}
        )
    )
    return unique


def statements(source: str) -> list[tuple[str, ...]]:
    """model.py's top-level statements by kind and the names they bind."""
    out: list[tuple[str, ...]] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = getattr(node, "module", None) or ""
            out.append((type(node).__name__, module, *(a.name for a in node.names)))
        elif isinstance(node, ast.Assign):
            out.append(("Assign", *(ast.unparse(t) for t in node.targets)))
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            out.append((type(node).__name__, node.name))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            out.append(("Expr", type(node.value.value).__name__))
        else:
            out.append((type(node).__name__, ast.unparse(node)))
    return out


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'studies.db'}"


def run_export(storage: str, name: str, out: Path, *args: str) -> int:
    # "--study-name=NAME": a name starting with "-" is still the option's value.
    argv = ["--storage", storage, f"--study-name={name}", "--trial", "0", "--out", str(out)]
    return main([*argv, "--trust-stored-spec", *args])  # the space attr is fuzzed too


@pytest.fixture(scope="module")
def clean(storage: str, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, ...]]:
    out = tmp_path_factory.mktemp("clean") / "out"
    assert run_export(storage, write_study(storage, "clean", CLEAN_STUDY, CLEAN_TRIAL), out) == 0
    return statements((out / "model.py").read_text())


def expected_to_pass(study: dict[str, Any]) -> bool:
    """What the export must accept: a valid mean/std and budget, a string dataset."""

    def numbers(values: object, low: float) -> bool:
        return (
            isinstance(values, list)
            and len(values) == 1
            and type(values[0]) in (int, float)
            and low <= values[0] <= 1
        )

    budget = study["attention_budget_mb"]
    return (
        numbers(study["mean"], 0.0)
        and numbers(study["std"], 1e-6)
        and (budget is None or (type(budget) in (int, float) and 0 < budget <= 1024))
        and (study["dataset"] is None or isinstance(study["dataset"], str))
    )


def check_export(
    storage: str,
    name: str,
    study: dict[str, Any],
    trial: dict[str, Any],
    clean: list[tuple[str, ...]],
    out: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stored = write_study(storage, name, study, trial)
    code = run_export(storage, stored, out)
    err = capsys.readouterr().err.strip()
    if code == 2:
        assert err.startswith("error:") and "\n" not in err and err.isprintable(), err
        assert not expected_to_pass(study), err
        assert not out.exists()
        return
    assert code == 0, err
    source = (out / "model.py").read_text(encoding="utf-8")
    assert statements(source) == clean
    readme = (out / "README.md").read_text(encoding="utf-8")
    title = readme.splitlines()[0].removeprefix("# Trial 0 of study ")
    assert markdown_escaped(title), title  # the stored name opens no tag, link or code span
    assert re.search(r"(?<!\\)<", readme) is None


def markdown_escaped(text: str) -> bool:
    """Whether every character that starts Markdown markup in ``text`` is backslash-escaped."""
    chars = iter(text)
    for c in chars:
        if c == "\\":
            if next(chars, "") not in MARKDOWN_SPECIAL:
                return False
        elif c in MARKDOWN_SPECIAL:
            return False
    return True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.one_of(NAME, st.sampled_from(PAYLOADS[:7])), study=study_attrs(), trial=trial_attrs()
)
def test_hostile_attrs_never_become_code(
    storage: str,
    clean: list[tuple[str, ...]],
    capsys: pytest.CaptureFixture[str],
    name: str,
    study: dict[str, Any],
    trial: dict[str, Any],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_export(storage, name, study, trial, clean, Path(tmp) / "out", capsys)


def all_payload(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    study = {**CLEAN_STUDY, "dataset": text, "space": text, "attention_budget_mb": None}
    study.update(seed=text, text_column=text, label_column=text, objectives=text)
    trial = {**dict.fromkeys(TRIAL_KEYS, text), "device": {"cpu": text}, "latency": {"batch": text}}
    return study, trial


# Imports each model.py from its own folder, as a user would: the folder is the cwd.
IMPORT_EACH = """
import importlib.util, os, sys
for i, folder in enumerate(sys.argv[1:]):
    os.chdir(folder)
    spec = importlib.util.spec_from_file_location(f"model{i}", "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.Net()
print("imported", len(sys.argv) - 1)
"""


def test_importing_the_export_creates_no_file(
    storage: str,
    clean: list[tuple[str, ...]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    folders = []
    for i, text in enumerate(PAYLOADS):  # each in every attr at once
        study, trial = all_payload(text)
        out = tmp_path / f"out{i}"
        check_export(storage, text.replace("\ud800", ""), study, trial, clean, out, capsys)
        folder = tmp_path / f"empty{i}"
        folder.mkdir()
        (folder / "model.py").write_bytes((out / "model.py").read_bytes())
        folders.append(folder)
    done = subprocess.run(
        [sys.executable, "-B", "-c", IMPORT_EACH, *map(str, folders)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0 and f"imported {len(folders)}" in done.stdout, done.stderr[-2000:]
    for folder in folders:
        assert sorted(os.listdir(folder)) == ["model.py"], folder
    assert not list(tmp_path.rglob("pwned"))
