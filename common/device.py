"""Choose where a site trains."""

from __future__ import annotations

import torch

from fedscan.common.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if choice not in DEVICE_CHOICES:
        raise ConfigError(f"Unknown device {choice!r}; use one of {', '.join(DEVICE_CHOICES)}.")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA GPU is visible; use auto or cpu.")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)
