"""Models and how a site trains them.

Modules:

- :mod:`~fedscan.common.models.registry` — models by name (input size, loss, DP mode); imports no
  torch;
- :mod:`~fedscan.common.models.networks` — the networks themselves, built Opacus-compatible;
- :mod:`~fedscan.common.models.training` — local DP-SGD (Opacus) or plain SGD;
- :mod:`~fedscan.common.models.batches` — the batches it iterates over, augmented on the device or
  per image in the loader;
- :mod:`~fedscan.common.models.classical`, :mod:`~fedscan.common.models.classical_model` — the
  classical baseline: preprocessing and HOG/LBP features, linear models on them;
- :mod:`~fedscan.common.models.feature_stats` — federated feature standardisation (sums, never
  features);
- :mod:`~fedscan.common.models.checkpoint` — model files (``NAME.pt`` beside ``NAME.json``).
"""
