"""Explanations at the site: Grad-CAM, Grad-CAM++ and occlusion maps of a classifier (per class),
a segmentation model's predicted mask, and the files a hospital reviews them in.

Public surface (everything else is private to the package)::

    ExplainSettings            which methods, occlusion patch and stride (validated, frozen)
    explain_classifier         model + ImageSet → one ImageExplanation per image
    explain_segmentation       predicted mask probabilities + ImageSet → records
    review_order               false positives, then false negatives, then the rest, by score
    write_explanations         overlays/*.png, index.html and optionally DICOM Secondary Captures
    randomisation_test         the maps' sanity check: pointing game, trained against random

Invariants: maps never leave the site. This package imports no Flower and opens no connection;
nothing in ``fedscan.client`` that builds a reply imports it (tests/test_layout.py), and the
privacy canary test checks that nothing it writes reaches the coordinator. Its only outputs are
files in the folder the hospital names.
"""

from __future__ import annotations

from fedscan.common.explain.compute import explain_classifier, explain_segmentation
from fedscan.common.explain.outputs import write_explanations
from fedscan.common.explain.pointing import PointingScore, randomisation_test
from fedscan.common.explain.records import ImageExplanation, review_order
from fedscan.common.explain.settings import METHODS, ExplainSettings

__all__ = [
    "METHODS",
    "ExplainSettings",
    "ImageExplanation",
    "PointingScore",
    "explain_classifier",
    "explain_segmentation",
    "randomisation_test",
    "review_order",
    "write_explanations",
]
