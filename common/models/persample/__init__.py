"""fedscan's own per-sample gradient path for DP-SGD (``grad_sample_mode = "fused"``).

The façade: :class:`PerSampleClipper` (attach to a model, :meth:`~PerSampleClipper.clip` after each
backward pass) and :func:`supports` (can a model use it, and if not, why). The rules per layer type
live in :mod:`.rules` and :mod:`.conv`. The result is the same clipped gradient sum Opacus' hooks
produce (``tests/common/test_persample.py`` checks it against Opacus to float tolerance); Opacus
still does the Poisson sampling, the noise and the accounting.
"""

from __future__ import annotations

from torch import nn

from fedscan.common.models.persample.clipper import (
    NORM_EPSILON,
    PerSampleClipper,
    UnsupportedModel,
    trainable_layers,
)

__all__ = ["NORM_EPSILON", "PerSampleClipper", "UnsupportedModel", "supports"]


def supports(model: nn.Module) -> str:
    """``""`` when every trainable layer of ``model`` has a per-sample rule, else the reason."""
    try:
        trainable_layers(model)
    except UnsupportedModel as error:
        return str(error)
    return ""
