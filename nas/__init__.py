"""nas: neural-architecture search of attention CNNs on Optuna and PyTorch.

Kept light on purpose: importing ``nas`` imports nothing heavy; import the
packages you need (``nas.model``, ``nas.data``, ``nas.train``, ``nas.search``,
``nas.export``).
"""

__version__ = "0.1.0"
