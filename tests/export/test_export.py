"""python -m nas.export on a real study: files, weights, ONNX, safety, replay, bad input."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from nas.data import load_data
from nas.export import ExportError, parse_pick
from nas.export.cli import main
from nas.model import ArchSpec, build_model
from nas.search import load_space, make_storage
from nas.train import TrainConfig
from tests.conftest import TEXT_SEED, StudyRef, TextStudyRef, _search, write_text_corpus

optuna.logging.set_verbosity(optuna.logging.WARNING)


def copy_study(ref: StudyRef, tmp_path: Path) -> StudyRef:
    """A private copy of the shared study, to change."""
    src = Path(ref.storage.removeprefix("sqlite:///"))
    dst = tmp_path / "copy.db"
    shutil.copy(src, dst)
    return StudyRef(f"sqlite:///{dst}", ref.name)


def export(ref: StudyRef, out: Path, *args: str) -> int:
    return main(["--storage", ref.storage, "--study-name", ref.name, "--out", str(out), *args])


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"exported_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_arch(ref: StudyRef, number: int, arch: object) -> None:
    """Edit a finished trial's stored spec in the database, as anyone with access could."""
    db = sqlite3.connect(ref.storage.removeprefix("sqlite:///"))
    with db:
        changed = db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE key = 'arch' AND trial_id ="
            " (SELECT trial_id FROM trials WHERE number = ?)",
            (json.dumps(arch), number),
        ).rowcount
    db.close()
    assert changed == 1


def set_trial_attr(ref: StudyRef, number: int, key: str, value: object) -> None:
    """Set (or add) a finished trial's user attr in the database, as anyone could."""
    db = sqlite3.connect(ref.storage.removeprefix("sqlite:///"))
    with db:
        (trial_id,) = db.execute(
            "SELECT trial_id FROM trials WHERE number = ?", (number,)
        ).fetchone()
        db.execute(
            "DELETE FROM trial_user_attributes WHERE key = ? AND trial_id = ?", (key, trial_id)
        )
        db.execute(
            "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
            (trial_id, key, json.dumps(value)),
        )
    db.close()


def set_study_attr(ref: StudyRef, key: str, value: object) -> None:
    """Set a study user attr (None: delete it), as anyone with access could."""
    if value is not None:
        optuna.load_study(study_name=ref.name, storage=ref.storage).set_user_attr(key, value)
        return
    db = sqlite3.connect(ref.storage.removeprefix("sqlite:///"))
    with db:
        db.execute("DELETE FROM study_user_attributes WHERE key = ?", (key,))
    db.close()


def refused(ref: StudyRef, out: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Export, expecting a refusal: exit 2, one line on stderr, nothing written to out."""
    assert export(ref, out, *args) == 2, args
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert not out.exists() or sorted(out.iterdir()) == [], args
    return err


def docstring_of(path: Path) -> str:
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc is not None
    return doc


def best_number(ref: StudyRef) -> int:
    study = optuna.load_study(study_name=ref.name, storage=make_storage(ref.storage))
    return max(study.best_trials, key=lambda t: t.values[0]).number


def test_best_writes_code_spec_readme(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "best"
    assert export(digits_study, out, "--best") == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.py", "spec.json"]
    study = optuna.load_study(study_name=digits_study.name, storage=digits_study.storage)
    trial = study.trials[best_number(digits_study)]
    spec = ArchSpec.from_json((out / "spec.json").read_text())
    assert spec == ArchSpec.from_dict(trial.user_attrs["arch"])
    net = load_module(out / "model.py").Net()
    net.load_state_dict(build_model(spec).state_dict(), strict=True)
    readme = (out / "README.md").read_text()
    assert f"Trial {trial.number}" in readme and "load_state_dict" in readme
    assert f"exported trial {trial.number}" in capsys.readouterr().out
    # No weights were written: model.py says so, and how to get them.
    doc = docstring_of(out / "model.py")
    assert "Needs only PyTorch. No weights were exported" in doc and "--weights" in doc
    assert "load_file" not in doc and "written beside" not in doc
    assert "No weights were exported" in readme and "load_file(" in readme


def test_weights_retrain_safetensors_and_onnx(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime
    from safetensors.torch import load_file

    out = tmp_path / "w"
    assert export(digits_study, out, "--trial", "0", "--weights", "--epochs", "1") == 0
    printed, progress = capsys.readouterr()
    assert "test accuracy" in printed
    test_accuracy = float(printed.split("test accuracy ")[1].split(",")[0])
    assert 0.3 < test_accuracy <= 1.0  # seed_cnn learns digits in one epoch
    # Off a terminal the progress is a line per tenth of the budget.
    assert "retraining 1 epochs: 50%" in progress and "retraining 1 epochs: 100%" in progress
    readme = (out / "README.md").read_text()
    assert f"| test accuracy (retrained, `model.safetensors`) | {test_accuracy:.4f} |" in readme
    assert "| retraining | 1.00 epochs in " in readme
    assert "| latency (measured at export) | " in readme and "batch 1, one thread" in readme
    doc = docstring_of(out / "model.py")
    assert "safetensors package" in doc and 'load_file("model.safetensors")' in doc
    assert "No weights" not in doc and "needs only" not in (out / "README.md").read_text()
    assert "fold_batchnorm" not in doc + readme  # seed_cnn has no norm to fold
    module = load_module(out / "model.py")
    net = module.Net().eval()
    state = load_file(out / "model.safetensors")
    net.load_state_dict(state, strict=True)  # safetensors round trip into the exported code
    spec = ArchSpec.from_json((out / "spec.json").read_text())
    built = build_model(spec).eval()
    built.load_state_dict(state, strict=True)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    x = module.preprocess(images)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), built(x))
        expected = net(x).numpy()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    got = session.run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_pick_chooses_most_accurate_within_bounds(digits_study: StudyRef, tmp_path: Path) -> None:
    study = optuna.load_study(study_name=digits_study.name, storage=digits_study.storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    bound = sorted(t.user_attrs["latency_ms"] for t in complete)[len(complete) // 2]
    fitting = [t for t in complete if t.user_attrs["latency_ms"] <= bound]
    want = max(fitting, key=lambda t: t.values[0])
    out = tmp_path / "pick"
    assert export(digits_study, out, "--pick", f"latency<={bound * 1000}us") == 0
    assert ArchSpec.from_json((out / "spec.json").read_text()) == ArchSpec.from_dict(
        want.user_attrs["arch"]
    )
    assert parse_pick("params < 100k and flops<=2.5M") == [
        ("params", "<", 100_000.0),
        ("flops", "<=", 2_500_000.0),
    ]
    for bad in ("latency<=2 parsecs", "speed<1", "__import__('os')"):
        with pytest.raises(ExportError, match="--pick"):
            parse_pick(bad)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda a: a["stages"][0].update(block="__import__('os').system('touch /tmp/x')"),
            "stages[0].block must be one of",
        ),
        (lambda a: a["stages"][0].update(width=10**9), "stages[0].width"),
        (lambda a: a.update(global_pool="eval"), "global_pool"),
        (lambda a: a.update(extra="x"), "extra"),
    ],
    ids=["code-string", "absurd-width", "unknown-op", "unknown-key"],
)
def test_tampered_spec_refused_and_nothing_written(
    digits_study: StudyRef,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: object,
    message: str,
) -> None:
    ref = copy_study(digits_study, tmp_path)
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    number = best_number(ref)
    arch = study.trials[number].user_attrs["arch"]
    tamper(arch)  # type: ignore[operator]
    set_arch(ref, number, arch)
    out = tmp_path / "out"
    assert export(ref, out, "--trial", str(number)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err
    assert "refused" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["copy.db"]


def test_replay_mismatch_detected_and_overridable(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = copy_study(digits_study, tmp_path)
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    searched = [
        t
        for t in study.trials
        if "baseline" not in t.user_attrs and t.state == optuna.trial.TrialState.COMPLETE
    ]
    trial = searched[0]
    arch = trial.user_attrs["arch"]
    arch["classes"] = 10
    arch["head"]["dropout"] = 0.5 if arch["head"]["dropout"] != 0.5 else 0.0
    arch["head"]["hidden"] = arch["head"]["hidden"] or [32]
    ArchSpec.from_dict(arch)  # still a valid spec: only the replay can tell
    set_arch(ref, trial.number, arch)
    out = tmp_path / "out"
    assert export(ref, out, "--trial", str(trial.number)) == 2
    err = capsys.readouterr().err
    assert "give another network than the stored spec" in err and "spec.head" in err
    assert "--trust-stored-spec" in err and not out.exists()
    assert export(ref, out, "--trial", str(trial.number), "--trust-stored-spec") == 0
    assert ArchSpec.from_json((out / "spec.json").read_text()) == ArchSpec.from_dict(arch)


def test_bad_input_one_line_exit_2(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = copy_study(digits_study, tmp_path)
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    failed = study.ask()
    failed.set_user_attr("reason", "RuntimeError: boom")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    empty = StudyRef(f"sqlite:///{tmp_path}/empty.db", "empty")
    optuna.create_study(study_name="empty", storage=empty.storage, directions=["maximize"] * 2)
    cases = [
        (StudyRef(ref.storage, "nope"), ["--best"], "no study 'nope'"),
        (ref, ["--trial", "99"], "--trial 99 does not exist"),
        (ref, ["--trial", str(failed.number)], "FAIL (RuntimeError: boom)"),
        (empty, ["--best"], "no complete trials"),
        (StudyRef(f"sqlite:///{tmp_path}/missing.db", "s"), ["--best"], "no such file"),
        (ref, ["--pick", "latency<=0.000001ms"], "no complete trial"),
    ]
    for target, args, message in cases:
        out = tmp_path / "out"
        assert export(target, out, *args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and message in err, (args, err)
        assert not out.exists()
    assert not (tmp_path / "missing.db").exists()


def test_cli_runs_as_a_module(digits_study: StudyRef, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.export",
            "--storage",
            digits_study.storage,
            "--study-name",
            digits_study.name,
            "--trial",
            "99",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_text_study_exports_vocab_encode_and_onnx_with_token_ids(
    text_study: TextStudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime
    from safetensors.torch import load_file

    from nas.data import Vocabulary, load_data

    out = tmp_path / "text"
    # Its dataset is a path read from the study: the user names it (or trusts it).
    err = refused(text_study, out, capsys, "--best")
    assert "vocabulary reads the study's dataset" in err and "--dataset" in err
    dataset = ["--dataset", text_study.dataset]
    assert export(text_study, out, "--best", "--weights", "--epochs", "1", *dataset) == 0
    assert "model.onnx matches PyTorch" in capsys.readouterr().out
    names = ["README.md", "model.onnx", "model.py", "model.safetensors", "spec.json", "vocab.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    spec = ArchSpec.from_json((out / "spec.json").read_text())
    assert spec.input.is_text and "encode(texts)" in (out / "README.md").read_text()
    # vocab.json is the search's vocabulary: rebuilt with the study's seed, not the default.
    vocab = Vocabulary.load(out / "vocab.json")
    searched = load_data(text_study.dataset, seed=TEXT_SEED).vocab
    assert vocab == searched and vocab.size == spec.input.vocab_size
    assert load_data(text_study.dataset, seed=0).vocab != vocab  # the seed matters here
    # encode() in model.py tokenises exactly as nas does (default path: beside model.py).
    module = load_module(out / "model.py")
    texts = ["The TEAM scored a goal, says the report!", "", "zebra " * 200, "Rain; rare3 rain"]
    ids = module.encode(texts)
    assert ids.dtype == torch.int64 and torch.equal(ids, vocab.encode(texts))
    assert torch.equal(module.encode(texts[0], out / "vocab.json"), vocab.encode(texts[:1]))
    # Weights load into the standalone Net and the built model alike; ONNX takes int64 ids.
    net = module.Net().eval()
    state = load_file(out / "model.safetensors")
    net.load_state_dict(state, strict=True)
    built = build_model(spec).eval()
    built.load_state_dict(state, strict=True)
    with torch.inference_mode():
        expected = net(ids).numpy()
        torch.testing.assert_close(built(ids).numpy(), expected)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (given,) = session.get_inputs()
    assert given.name == "token_ids" and given.type == "tensor(int64)"
    got = session.run(None, {"token_ids": ids.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def ngrams_study(tmp_path_factory: pytest.TempPathFactory) -> TextStudyRef:
    """A real search with --tokenizer ngrams on the text fixture corpus."""
    folder = tmp_path_factory.mktemp("ngrams_study")
    dataset = f"csv:{write_text_corpus(folder / 'news.csv')}"
    ref = TextStudyRef(f"sqlite:///{folder}/ngrams.db", "ngrams", dataset)
    args = ["--trials", "2", "--epochs", "1", "--dataset", dataset, "--seed", str(TEXT_SEED)]
    args += ["--tokenizer", "ngrams", "--storage", ref.storage, "--study-name", ref.name]
    _search(args)
    return ref


def test_an_ngrams_study_exports_the_vocabulary_it_searched_with(
    ngrams_study: TextStudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nas.data import Vocabulary

    study = optuna.load_study(study_name=ngrams_study.name, storage=ngrams_study.storage)
    assert study.user_attrs["tokenizer"] == "ngrams"
    out = tmp_path / "ngrams"
    dataset = ["--dataset", ngrams_study.dataset]
    assert export(ngrams_study, out, "--best", *dataset) == 0
    vocab = Vocabulary.load(out / "vocab.json")
    searched = load_data(ngrams_study.dataset, seed=TEXT_SEED, tokenizer="ngrams").vocab
    spec = ArchSpec.from_json((out / "spec.json").read_text())
    assert vocab == searched and vocab.tokenizer == "ngrams"
    assert (vocab.size, vocab.length) == (spec.input.vocab_size, spec.input.width)
    # The trials embedded the ngrams vocabulary (the runner loaded it), not the words one.
    words = load_data(ngrams_study.dataset, seed=TEXT_SEED).vocab
    assert words is not None and words.size < vocab.size
    module = load_module(out / "model.py")
    texts = ["The TEAM scored a goal, says the report!", "", "os.path.join(rare7)", "pad unk"]
    texts += ["naïve café 日本語 goals", "rain " * 200]
    ids = module.encode(texts)
    assert torch.equal(ids, vocab.encode(texts))
    # A stored tokenizer is one of the names, compared as a string; another of the names
    # gives another vocabulary than the network's, which is refused too.
    ref = copy_study(ngrams_study, tmp_path)
    for hostile in ("__import__('os').system('true')", ["ngrams"], 3, "NGRAMS"):
        set_study_attr(ref, "tokenizer", hostile)
        err = refused(ref, tmp_path / "out", capsys, "--best", *dataset)
        assert "study attr tokenizer must be one of words, bytes, ngrams" in err, err
    set_study_attr(ref, "tokenizer", "words")
    err = refused(ref, tmp_path / "out", capsys, "--best", *dataset)
    assert "the dataset changed since the study" in err


def test_a_text_study_that_records_no_tokenizer_exports_as_words(
    text_study: TextStudyRef, tmp_path: Path
) -> None:
    from nas.data import Vocabulary

    ref = copy_study(text_study, tmp_path)
    set_study_attr(ref, "tokenizer", None)  # as a study made before it was recorded
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    assert "tokenizer" not in study.user_attrs
    out = tmp_path / "out"
    assert export(ref, out, "--best", "--dataset", text_study.dataset) == 0
    vocab = Vocabulary.load(out / "vocab.json")
    assert vocab.tokenizer == "words"
    assert vocab == load_data(text_study.dataset, seed=TEXT_SEED).vocab


def test_a_text_network_exports_at_the_length_it_was_trained_at(
    text_study: TextStudyRef, tmp_path: Path
) -> None:
    """The rule that derives a length from the data can change between versions (its cap
    went from 512 to 2,048): the export loads the texts at the network's own length."""
    from nas.data import Vocabulary

    ref = copy_study(text_study, tmp_path)
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    best = max(study.best_trials, key=lambda t: t.values[0])
    spec = ArchSpec.from_dict(best.user_attrs["arch"])
    derived = load_data(text_study.dataset, seed=TEXT_SEED).task.length
    assert spec.input.width == derived
    arch = best.user_attrs["arch"]
    arch["input"]["width"] = derived - 3  # as trained under another rule
    set_trial_attr(ref, best.number, "arch", arch)
    out = tmp_path / "out"
    dataset = ["--dataset", text_study.dataset]
    assert (
        export(ref, out, "--trial", str(best.number), "--weights", "--epochs", "1", *dataset) == 0
    )
    assert Vocabulary.load(out / "vocab.json").length == derived - 3
    assert ArchSpec.from_json((out / "spec.json").read_text()).input.width == derived - 3


# --------------------------------------------------------------------------- hostile studies


def searched_trial(ref: StudyRef) -> int:
    """A complete trial of the searched space (not a baseline) whose net has attention."""
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    for t in study.trials:
        searched = t.state == optuna.trial.TrialState.COMPLETE and "baseline" not in t.user_attrs
        if searched and any(ArchSpec.from_dict(t.user_attrs["arch"]).attention_bytes()):
            return t.number
    raise AssertionError("the digits study has no searched trial with attention")


def test_a_space_file_named_by_the_study_is_never_imported(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = copy_study(digits_study, tmp_path)
    number = searched_trial(ref)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\ndef suggest(trial, task): pass\n")
    out = tmp_path / "out"
    set_study_attr(ref, "space", str(evil))
    err = refused(ref, out, capsys, "--trial", str(number))
    assert "is not a built-in space" in err and "--space PATH" in err
    set_study_attr(ref, "space", "attention_cnn")
    set_trial_attr(ref, 0, "baseline", str(evil))  # a baseline names a built-in space too
    assert "trial 0's baseline is refused" in refused(ref, out, capsys, "--trial", "0")
    assert not marker.exists()
    # A space file the search was given: replayed only through the file the user names.
    mine = tmp_path / "my_spaces" / "attention_cnn.py"
    mine.parent.mkdir()
    shutil.copy(Path(__file__).parents[2] / "search_spaces" / "attention_cnn.py", mine)
    set_study_attr(ref, "space", "my_spaces/attention_cnn.py")  # as the search stores it
    assert "--space PATH" in refused(ref, out, capsys, "--trial", str(number))
    err = refused(ref, out, capsys, "--trial", str(number), "--space", str(evil))
    assert "file names differ" in err and not marker.exists()
    assert export(ref, out, "--trial", str(number), "--space", str(mine)) == 0


def test_the_stored_dataset_is_read_only_when_needed_and_named(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = copy_study(digits_study, tmp_path)
    number = searched_trial(ref)
    stored = f"imagefolder:{tmp_path / 'nowhere'}"  # a path: export must not look at it
    set_study_attr(ref, "dataset", stored)
    out = tmp_path / "out"
    assert export(ref, out, "--trial", str(number)) == 0  # replayed on the spec's own task
    assert "on\nimagefolder:/" in (out / "README.md").read_text()  # shown as text
    shutil.rmtree(out)
    err = refused(ref, out, capsys, "--trial", str(number), "--weights")
    assert "--weights reads the study's dataset" in err and "--dataset VALUE" in err
    err = refused(ref, out, capsys, "--trial", str(number), "--dataset", "digits")
    assert "--dataset 'digits' is not the study's dataset" in err
    # Named by the user, it is read: here it does not exist.
    err = refused(ref, out, capsys, "--trial", str(number), "--weights", "--dataset", stored)
    assert "does not exist" in err
    err = refused(ref, out, capsys, "--trial", str(number), "--weights", "--trust-stored-dataset")
    assert "does not exist" in err


def test_out_must_be_empty_unless_forced_and_is_then_replaced_whole(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.safetensors", "model.onnx", "model.py"):
        (out / name).write_text("an earlier export")
    assert export(digits_study, out, "--trial", "0") == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--force" in err
    assert (out / "model.py").read_text() == "an earlier export"
    assert export(digits_study, out, "--trial", "0", "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.py", "spec.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
    (out / "notes.txt").write_text("mine")
    assert export(digits_study, out, "--trial", "0", "--force") == 2
    assert "does not write (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        ([math.nan], [0.3]),
        ([0.3], [math.inf]),
        ([0.3], [0.0]),
        ([0.3], [-0.3]),
        ([0.3, 0.3], [0.3, 0.3]),  # two channels for a one-channel input
        (["0.3"], [0.3]),
        ([True], [0.3]),
        (0.3, [0.3]),
        ([300.0], [0.3]),  # pixels are scaled to [0, 1]
        ([0.3], None),  # one without the other
    ],
)
def test_bad_mean_or_std_refused(
    digits_study: StudyRef,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mean: object,
    std: object,
) -> None:
    ref = copy_study(digits_study, tmp_path)
    set_study_attr(ref, "mean", mean)
    set_study_attr(ref, "std", std)
    err = refused(ref, tmp_path / "out", capsys, "--trial", "0")
    assert "mean and std are refused" in err and "1 finite numbers" in err


def test_retrain_evaluates_at_the_search_batch(
    digits_study: StudyRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nas.export._retrain as retraining  # the module retrain looks evaluate up in
    from nas.export import retrain

    batches: list[int] = []
    real = retraining.evaluate

    def spy(*args: Any, **kwargs: Any) -> float:
        batches.append(kwargs.get("batch_size", 1024))
        return real(*args, **kwargs)

    monkeypatch.setattr(retraining, "evaluate", spy)
    study = optuna.load_study(study_name=digits_study.name, storage=digits_study.storage)
    spec = ArchSpec.from_dict(study.trials[0].user_attrs["arch"])
    test = retrain(study, spec, seed=0, device="cpu", data_dir=None, epochs=0.2).test_accuracy
    assert 0 <= test <= 1 and batches and set(batches) == {256}, batches


def test_a_retrain_in_minutes_stops_with_the_clock_and_within_its_epochs() -> None:
    from nas.export import retrain_on

    data = load_data("digits")
    spec = load_space("seed_cnn").spec(data.task)
    # A budget of 0.6 s is far below the epochs' cost: the clock ends it, annealed.
    by_clock = retrain_on(data, spec, 0, "cpu", epochs=1000, minutes=0.01)
    assert by_clock.training.status == "time_limit" and by_clock.training.epochs_done < 1000
    # Epochs that end long before the minutes do: the epochs end it.
    by_epochs = retrain_on(data, spec, 0, "cpu", epochs=0.5, minutes=60)
    assert by_epochs.training.status == "ok"
    assert by_epochs.training.epochs_done == pytest.approx(0.5, abs=0.05)
    assert by_epochs.latency.median_ms > 0 and 0 <= by_epochs.test_accuracy <= 1


def test_a_recipe_variant_replaces_the_recipes_fields() -> None:
    from nas.export import retrain_on

    data = load_data("digits")
    spec = load_space("seed_cnn").spec(data.task)
    varied = retrain_on(data, spec, 0, "cpu", epochs=0.5, recipe={"epochs": 0.25})
    assert varied.training.epochs_done == pytest.approx(0.25, abs=0.05)
    with pytest.raises(TypeError, match="nonsense"):
        retrain_on(data, spec, 0, "cpu", epochs=0.5, recipe={"nonsense": 1})


def test_the_default_retrain_is_budgeted_in_optimiser_steps() -> None:
    from nas.export import (
        RETRAIN_BAG_TOKEN_DROPOUT,
        RETRAIN_STEPS,
        RETRAIN_TOKEN_DROPOUT,
        retrain_config,
        retrain_on,
    )
    from nas.export._retrain import DEFAULT_EPOCHS

    # digits: 10 epochs of its ~1,400 training images would be ~220 optimiser steps.
    data = load_data("digits")
    spec = load_space("seed_cnn").spec(data.task)
    done = retrain_on(data, spec, 0, "cpu").training
    steps_per_epoch = len(data.full_train().y) // 64  # the image recipe's batch
    assert done.status == "ok" and done.epochs_done > DEFAULT_EPOCHS
    assert round(done.epochs_done * steps_per_epoch) == RETRAIN_STEPS
    # A large training split keeps the default epochs; given epochs or minutes are kept.
    image = functools.partial(retrain_config, "image", seed=0, flip=True, train_size=1400)
    assert image(epochs=None, minutes=None, train_size=60_000).epochs == DEFAULT_EPOCHS
    assert image(epochs=3, minutes=None).epochs == 3
    assert image(epochs=None, minutes=1).max_seconds == 60
    # Text: the steps, on a small corpus and a large one alike (batch 128).
    for size in (2_400, 30_000):
        text = retrain_config(
            "text", seed=0, epochs=None, minutes=None, flip=False, train_size=size
        )
        assert text.epochs * text.steps_per_epoch(size) == pytest.approx(RETRAIN_STEPS)
    # A full run's word dropout: a text retrain drops tokens, more of a bag's; a trial and
    # an image do not.
    recipe = functools.partial(retrain_config, "text", seed=0, epochs=2, minutes=None, flip=False)
    assert recipe().token_dropout == RETRAIN_TOKEN_DROPOUT > 0
    assert recipe(bag=True).token_dropout == RETRAIN_BAG_TOKEN_DROPOUT > RETRAIN_TOKEN_DROPOUT
    assert TrainConfig.for_task("text").token_dropout == 0
    assert image(epochs=2, minutes=None).token_dropout == 0
    with pytest.raises(ValueError, match="training split's size"):
        retrain_config("text", seed=0, epochs=None, minutes=None, flip=False)


def test_stored_specs_are_judged_by_the_studys_attention_budget(
    digits_study: StudyRef,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = copy_study(digits_study, tmp_path)
    number = searched_trial(ref)
    set_study_attr(ref, "attention_budget_mb", 16.0)
    study = optuna.load_study(study_name=ref.name, storage=ref.storage)
    scores = max(ArchSpec.from_dict(study.trials[number].user_attrs["arch"]).attention_bytes())
    # The reader's budget: half of what the trial's attention needs (on digits' small maps
    # that can be under a kilobyte), so its spec is over it.
    monkeypatch.setenv("NAS_ATTENTION_BUDGET_MB", f"{scores / 2 / 2**20:.9f}")
    out = tmp_path / "out"
    assert export(ref, out, "--trial", str(number)) == 0  # stored spec and replay: 16 MiB
    shutil.rmtree(out)
    for bad in (1e30, math.nan, -1, 0, "16", True):
        set_study_attr(ref, "attention_budget_mb", bad)
        err = refused(ref, out, capsys, "--trial", str(number))
        assert "attention budget is refused" in err and "attention_budget_mb must be" in err
    set_study_attr(ref, "attention_budget_mb", None)  # an older study: the reader's budget
    assert "over the budget" in refused(ref, out, capsys, "--trial", str(number))


def test_docstring_figures_are_formatted(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = copy_study(digits_study, tmp_path)
    set_trial_attr(ref, 0, "epochs_done", 0.2992874109263658)
    set_trial_attr(ref, 0, "params", "12 parameters")  # not a number: shown as n/a
    out = tmp_path / "out"
    assert export(ref, out, "--trial", "0") == 0
    doc = docstring_of(out / "model.py")
    assert "after 0.30 epochs" in doc and "n/a parameters" in doc
    assert "| parameters | n/a |" in (out / "README.md").read_text()


@pytest.mark.parametrize("flag", ["--epochs", "--minutes"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_retraining_budget_must_be_finite_and_positive(
    digits_study: StudyRef,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
) -> None:
    assert export(digits_study, tmp_path / "o", "--best", "--weights", flag, value) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be a finite number above 0" in err and value in err
    assert not (tmp_path / "o").exists()
