"""nas: neural-architecture search of attention CNNs on Optuna and PyTorch.

Kept light on purpose: importing ``nas`` imports nothing heavy; import the
submodules you need (``nas.spec``, ``nas.builder``, ...).
"""

__version__ = "0.1.0"
