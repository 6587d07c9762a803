"""Search spaces: each module defines ``suggest(trial, task) -> ArchSpec``.

Spaces are found by name (``attention_cnn``) or by the path of a ``.py`` file; see
``nas.search.load_space``. ``seed_cnn`` and ``resnet`` are fixed hand designs (spaces
with no parameters) so that they run through the same machinery as searched ones.
"""
