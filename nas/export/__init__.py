"""Export a chosen trial as standalone PyTorch code: ``model.py`` rendered from its spec,
weights, ONNX and a README. The command line is :mod:`nas.export.cli`."""
