"""What ``fedscan explain`` computes: one validated, frozen settings object.

Invariant: settings are checked on construction, so a typo in a method name fails before a model is
loaded or an image decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedscan.common.errors import ConfigError

GRADCAM = "gradcam"
GRADCAM_PP = "gradcam++"
OCCLUSION = "occlusion"
METHODS = (GRADCAM, GRADCAM_PP, OCCLUSION)
TITLES = {GRADCAM: "Grad-CAM", GRADCAM_PP: "Grad-CAM++", OCCLUSION: "occlusion"}
MASK = "mask"  # a segmentation model's "map": its predicted mask


@dataclass(frozen=True)
class ExplainSettings:
    """Which maps to compute and how.

    Parameters
    ----------
    methods : default ("gradcam", "occlusion")
        Any of :data:`METHODS`, in the order the overlays show them.
    patch : default 8
        Occlusion: the side of the square patch (pixels of the model's input) set to the image's
        mean. 8 of a 64-pixel input is about a lung's eighth, the size of a synthetic opacity.
    stride : default 4
        Occlusion: how far the patch moves; each pixel is covered by (patch / stride)² patches.
    batch_size : default 64
        Images (Grad-CAM) or occluded copies (occlusion) per forward pass.
    """

    methods: tuple[str, ...] = (GRADCAM, OCCLUSION)
    patch: int = 8
    stride: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        unknown = [name for name in self.methods if name not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"Unknown explanation method(s) {', '.join(unknown) or '(none given)'}; "
                f"use one or more of {', '.join(METHODS)}, comma-separated."
            )
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("Each explanation method may be named once.")
        if self.patch < 1 or not 1 <= self.stride <= self.patch:
            raise ConfigError("The occlusion patch must be ≥ 1 pixel and the stride 1..patch.")
        if self.batch_size < 1:
            raise ConfigError("The batch size must be at least 1.")

    @classmethod
    def parse(cls, methods: str, **options: int) -> ExplainSettings:
        """From ``--methods`` (comma-separated names) and the numeric options."""
        names = tuple(name.strip().lower() for name in methods.split(",") if name.strip())
        return cls(methods=names, **options)
