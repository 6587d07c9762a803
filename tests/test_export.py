"""python -m nas.export on a real study: files, weights, ONNX, safety, replay, bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
import pytest
import torch

from nas.builder import build_model
from nas.export import ExportError, main, parse_pick
from nas.spec import ArchSpec
from nas.study import make_storage
from tests.conftest import TEXT_SEED, StudyRef, TextStudyRef

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


def test_weights_retrain_safetensors_and_onnx(
    digits_study: StudyRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime
    from safetensors.torch import load_file

    out = tmp_path / "w"
    assert export(digits_study, out, "--trial", "0", "--weights", "--epochs", "1") == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    test_accuracy = float(printed.split("test accuracy ")[1].split()[0])
    assert 0.3 < test_accuracy <= 1.0  # seed_cnn learns digits in one epoch
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

    from nas.data import load_data
    from nas.text import Vocabulary

    out = tmp_path / "text"
    assert export(text_study, out, "--best", "--weights", "--epochs", "1") == 0
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
