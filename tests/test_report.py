"""python -m nas.report on a real finished study (the shared ``digits_study``), in-process."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import optuna
import pandas as pd
import pytest
from conftest import StudyRef
from optuna.trial import TrialState, create_trial

from nas.report import ATTENTION_OPS, main
from nas.search import front, hypervolume, pareto

PNGS = (
    "accuracy_vs_latency.png",
    "history.png",
    "learning_curves.png",
    "importances.png",
    "accuracy_by_attention.png",
)
STAGE0 = ["s0_block", "s0_width", "s0_depth", "s0_attention", "s0_heads", "s0_downsample"]


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run(argv: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def report(digits_study: StudyRef, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    out = tmp_path_factory.mktemp("report") / "out"
    done = run(
        ["--storage", digits_study.storage, "--study-name", digits_study.name, "--out", str(out)]
    )
    assert done.code == 0, done.stderr
    return out, done


def _study(ref: StudyRef) -> optuna.Study:
    return optuna.load_study(study_name=ref.name, storage=ref.storage)


def test_csv_has_one_row_per_trial_with_structure(
    report: tuple[Path, Run], digits_study: StudyRef
) -> None:
    out, _ = report
    table = pd.read_csv(out / "trials.csv")
    study = _study(digits_study)
    assert list(table["number"]) == [t.number for t in study.trials]
    for column in (
        *("number", "state", "accuracy", "latency_ms", "latency_iqr_ms", "params", "flops"),
        *("epochs_done", "images_per_second", "train_status", "reason", "baseline", "summary"),
        *("n_stages", "stem", "stem_width", *STAGE0, "global_pool", "head_hidden"),
    ):
        assert column in table.columns, column
    assert set(table["baseline"].dropna()) == {"seed_cnn", "resnet"}
    assert table["lr"].isna().all()  # the default: every trial at the recipe's rate
    complete = table[table["state"] == "complete"]
    values = {t.number: t.values[0] for t in study.trials if t.state == TrialState.COMPLETE}
    assert dict(zip(complete["number"], complete["accuracy"], strict=True)) == pytest.approx(values)
    # Every trial of a real search has a valid arch: its structure is all there.
    staged = table[table["n_stages"] > 0]
    assert table["n_stages"].notna().all() and staged["s0_block"].notna().all()
    assert set(table["stem"]) <= {"conv", "patch", "none"}
    assert set(staged["s0_attention"]) <= set(ATTENTION_OPS)
    seed_cnn = table[table["baseline"] == "seed_cnn"].iloc[0]
    assert (seed_cnn["n_stages"], seed_cnn["stem_width"], seed_cnn["head_hidden"]) == (1, 64, "512")
    assert pd.isna(seed_cnn.get("s1_block", float("nan")))  # a one-stage net: no stage 1


@pytest.mark.parametrize("name", PNGS)
def test_every_png_is_a_real_image(report: tuple[Path, Run], name: str) -> None:
    path = report[0] / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 400 and image.shape[1] >= 600
    assert image.shape[2] in (3, 4) and image.std() > 0.01  # not one flat colour


def test_html_is_self_contained_plotly(report: tuple[Path, Run]) -> None:
    text = (report[0] / "report.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in text and "Pareto front" in text
    assert 'src="https://cdn.plot.ly' not in text and len(text) > 1_000_000  # plotly.js inline


def test_front_and_output_folder_printed(report: tuple[Path, Run], digits_study: StudyRef) -> None:
    out, done = report
    assert "Pareto front (accuracy, latency):" in done.stdout
    table = done.stdout.split("Pareto front (accuracy, latency):\n")[1].split("\n\n")[0]
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["trial", "accuracy", "latency"]
    numbers = [int(row.split()[0]) for row in rows]
    assert numbers == [t.number for t in front(_study(digits_study))]
    assert f"wrote {out}/" in done.stdout and done.stderr == ""


def test_pruned_failed_and_broken_trials(
    digits_study: StudyRef, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the study with a pruned trial, a failed one with a broken arch and a bare
    failed one: the report writes every file, and the default folder is studies/<name>-report."""
    shutil.copy(digits_study.storage.removeprefix("sqlite:///"), tmp_path / "copy.db")
    storage = f"sqlite:///{tmp_path}/copy.db"
    study = optuna.load_study(study_name=digits_study.name, storage=storage)
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            intermediate_values={50: 0.2, 100: 0.3},
            user_attrs={"latency_ms": 3.0, "reason": "pruned at epoch 1.00: accuracy 0.3000"},
        )
    )
    over = {"latency_ms": 80.0, "reason": "over budget, not trained: latency 80.000 ms"}
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=over))
    broken = {"schema_version": 1, "stages": "not a list"}
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"arch": broken}))
    study.add_trial(create_trial(state=TrialState.FAIL))
    monkeypatch.chdir(tmp_path)
    done = run(["--storage", storage, "--study-name", digits_study.name])
    assert done.code == 0, done.stderr
    out = tmp_path / "studies" / f"{digits_study.name}-report"
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == len(study.trials) == 12
    pruned, bad, bare = (table[table["number"] == n].iloc[0] for n in (8, 10, 11))
    assert pruned["state"] == "pruned" and pruned["latency_ms"] == 3.0
    assert pruned["reason"].startswith("pruned at epoch") and pd.isna(pruned["accuracy"])
    assert bad["state"] == bare["state"] == "fail"
    assert pd.isna(bad["n_stages"]) and pd.isna(bad["s0_block"]) and pd.isna(bare["n_stages"])
    assert all((out / name).is_file() for name in (*PNGS, "report.html"))
    states = [t.state for t in study.trials]
    n = {s: states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    assert f"{n[TrialState.COMPLETE]} complete, {n[TrialState.PRUNED]} pruned, " in done.stdout
    assert f"{n[TrialState.FAIL]} failed" in done.stdout


def test_no_complete_trials_gives_the_csv_and_a_note_per_plot(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/failed.db"
    study = optuna.create_study(
        storage=storage, study_name="f", directions=["maximize", "minimize"]
    )
    study.set_user_attr("objectives", "accuracy,latency")
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"reason": "boom"}))
    done = run(["--storage", storage, "--study-name", "f", "--out", str(tmp_path / "out")])
    assert done.code == 0 and "no complete trials: no front" in done.stdout
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(table["state"]) == ["fail"] and list(table["reason"]) == ["boom"]
    assert (tmp_path / "out" / "report.html").is_file()
    notes = done.stderr.splitlines()
    assert all(line.startswith("note: ") for line in notes)
    for name in PNGS:
        assert not (tmp_path / "out" / name).exists()
        assert sum(f"skipped {name}: " in line for line in notes) == 1


def _empty_study(tmp_path: Path) -> list[str]:
    storage = f"sqlite:///{tmp_path}/empty.db"
    optuna.create_study(storage=storage, study_name="empty", directions=["maximize", "minimize"])
    return ["--storage", storage, "--study-name", "empty"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown study", "no study 'nope' in sqlite:///"),
        ("empty study", "study 'empty' in sqlite:///"),
        ("missing file", "no such file"),
        ("bad url", "malformed storage URL"),
    ],
)
def test_bad_input_is_one_error_line(
    case: str, message: str, digits_study: StudyRef, tmp_path: Path
) -> None:
    argv = {
        "unknown study": lambda: ["--storage", digits_study.storage, "--study-name", "nope"],
        "empty study": lambda: _empty_study(tmp_path),
        "missing file": lambda: ["--storage", f"sqlite:///{tmp_path}/no/such.db"],
        "bad url": lambda: ["--storage", "not a url"],
    }[case]()
    if "--study-name" not in argv:
        argv += ["--study-name", "x"]
    before = sorted(tmp_path.rglob("*"))
    done = run([*argv, "--out", str(tmp_path / "out")])
    assert done.code == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    if case == "unknown study":
        assert f"studies there: {digits_study.name}" in done.stderr
    assert sorted(tmp_path.rglob("*")) == before  # nothing written: no report, no sqlite file


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run(["--storage", f"sqlite:///{tmp_path}/x.db", "--study-name", "x", "--debug"])
    assert done.code == 2 and "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "x.db").exists()


def test_pareto_and_hypervolume() -> None:
    points = [(2.0, 0.8), (1.0, 0.5), (3.0, 0.7), (2.0, 0.6)]  # (latency, accuracy)
    assert pareto(points) == [(1.0, 0.5), (2.0, 0.8)]
    # 0.5 × (4 - 1) + (0.8 - 0.5) × (4 - 2); dominated points add nothing.
    assert hypervolume(points, 4.0) == pytest.approx(2.1)
    assert hypervolume([(5.0, 0.9)], 4.0) == 0.0 and hypervolume([], 4.0) == 0.0


# --------------------------------------------------------------- hostile stored values

# OWASP's CSV-injection list: a cell starting with one of these is a spreadsheet formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _hostile_copy(ref: StudyRef, tmp_path: Path) -> tuple[str, optuna.Study]:
    """A copy of the study in a real SQLite file, to add hostile trials and attrs to."""
    shutil.copy(ref.storage.removeprefix("sqlite:///"), tmp_path / "hostile.db")
    storage = f"sqlite:///{tmp_path}/hostile.db"
    return storage, optuna.load_study(study_name=ref.name, storage=storage)


def _csv_rows(path: Path) -> tuple[list[str], dict[int, dict[str, str]]]:
    """The header and the rows by trial number, as the csv module reads them back."""
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    by_number = {int(r[0]): dict(zip(header, r, strict=True)) for r in rows}
    return header, by_number


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_stored_strings_are_inert_in_csv_html_png_and_terminal(
    digits_study: StudyRef, tmp_path: Path
) -> None:
    """Formulas are text in trials.csv (real numbers, negative ones too, stay numbers),
    markup is text in report.html, mathtext is text in the PNGs, control characters never
    reach the terminal."""
    storage, study = _hostile_copy(digits_study, tmp_path)
    arch = study.trials[-1].user_attrs["arch"]
    summary = "=HYPERLINK(\"http://x\")</pre><script>alert('summary')</script>\x1b]0;owned\x07"
    front_attrs = {
        "arch": arch,
        "latency_ms": 0.001,  # the fastest and most accurate: on the front, in the table
        "params": 10,
        "flops": 1000.0,
        "summary": summary,
        "reason": "+<script>alert('reason')</script>",
        "baseline": r"@$\undefined$",  # bad mathtext: must not cost the plot
        "train_status": "-1",  # looks like a negative number, but is a string
    }
    study.add_trial(
        create_trial(state=TrialState.COMPLETE, values=[1.0, 0.001], user_attrs=front_attrs)
    )
    other_attrs = {
        "latency_ms": 500.0,
        "latency_iqr_ms": -1.0,  # a stored negative number stays a number
        "params": "-1",
        "flops": "@SUM(A1)",
        "images_per_second": "\r=1+1",
        "epochs_done": "\t=1",
        "summary": "-2+3",
    }
    study.add_trial(
        create_trial(state=TrialState.COMPLETE, values=[0.0, 500.0], user_attrs=other_attrs)
    )
    done = run(
        ["--storage", storage, "--study-name", digits_study.name, "--out", str(tmp_path / "out")]
    )
    assert done.code == 0 and done.stderr == "", done.stderr

    header, rows = _csv_rows(tmp_path / "out" / "trials.csv")
    assert not [c for c in header if c.startswith(FORMULA_START)]
    front_row, other_row = rows[8], rows[9]
    for key in ("summary", "reason", "baseline", "train_status"):
        assert front_row[key] == "'" + str(front_attrs[key]), key
    for key in ("params", "flops", "images_per_second", "epochs_done", "summary"):
        assert other_row[key] == "'" + str(other_attrs[key]), key
    assert other_row["latency_iqr_ms"] == "-1.0" and front_row["params"] == "10"
    for row in rows.values():  # every cell of every trial: a formula start only on a number
        for key, cell in row.items():
            assert not cell.startswith(FORMULA_START) or _is_number(cell), (key, cell)

    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(" not in page and "</pre><script>" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;summary&#x27;)&lt;/script&gt;" in page
    assert all((tmp_path / "out" / name).is_file() for name in PNGS)
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "alert('summary')</script>\\x1b]0;owned\\x07" in done.stdout  # shown, escaped


def test_a_front_trial_with_text_for_a_number(digits_study: StudyRef, tmp_path: Path) -> None:
    """The front table shows it as n/a, and every file is written."""
    storage, study = _hostile_copy(digits_study, tmp_path)
    attrs = {"latency_ms": 0.001, "params": "=1+1", "flops": 1.0, "summary": "x"}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[1.0, 0.001], user_attrs=attrs))
    done = run(
        ["--storage", storage, "--study-name", digits_study.name, "--out", str(tmp_path / "out")]
    )
    assert done.code == 0, done.stderr
    assert done.stderr == ""
    row = next(line for line in done.stdout.splitlines() if line.split()[:2] == ["8", "1.0000"])
    assert row.split()[2:4] == ["0.001", "n/a"], row
    assert all((tmp_path / "out" / name).is_file() for name in (*PNGS, "report.html", "trials.csv"))
    _, rows = _csv_rows(tmp_path / "out" / "trials.csv")
    assert rows[8]["params"] == "'=1+1"


@pytest.mark.parametrize("objectives", ["=1+1,latency", "number,state", "@x"])
def test_stored_objective_names_are_checked(
    objectives: str, digits_study: StudyRef, tmp_path: Path
) -> None:
    """Names the search never writes are replaced: they would be CSV headers (formulas),
    or overwrite the trial number and state columns."""
    storage, study = _hostile_copy(digits_study, tmp_path)
    study.set_user_attr("objectives", objectives)
    done = run(
        ["--storage", storage, "--study-name", digits_study.name, "--out", str(tmp_path / "out")]
    )
    assert done.code == 0, done.stderr
    header, rows = _csv_rows(tmp_path / "out" / "trials.csv")
    assert not [c for c in header if c.startswith(FORMULA_START)]
    assert header[:4] == ["number", "state", "accuracy", "value1"]
    assert list(rows) == [t.number for t in study.trials]
    assert {r["state"] for r in rows.values()} <= {"complete", "pruned", "fail"}
