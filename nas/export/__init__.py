"""Export a chosen trial as standalone PyTorch code: ``model.py`` rendered from its spec,
weights, ONNX and a README. The command line is :mod:`nas.export.cli`."""

from nas.export._codegen import render_code
from nas.export._error import ExportError
from nas.export._pick import choose_trial, parse_pick
from nas.export._replay import check_replay
from nas.export._retrain import (
    RETRAIN_BAG_TOKEN_DROPOUT,
    RETRAIN_STEPS,
    RETRAIN_TOKEN_DROPOUT,
    Retrained,
    retrain,
    retrain_config,
    retrain_on,
)
from nas.export._write import EXPORT_FILES, export, write_onnx

__all__ = [
    "EXPORT_FILES",
    "RETRAIN_BAG_TOKEN_DROPOUT",
    "RETRAIN_STEPS",
    "RETRAIN_TOKEN_DROPOUT",
    "ExportError",
    "Retrained",
    "check_replay",
    "choose_trial",
    "export",
    "parse_pick",
    "render_code",
    "retrain",
    "retrain_config",
    "retrain_on",
    "write_onnx",
]
