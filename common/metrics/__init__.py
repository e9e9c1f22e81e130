"""Metrics of a model, per site and pooled over sites without sharing a single prediction.

Modules:

- :mod:`~fedscan.common.metrics.classification` — ROC-AUC, sensitivity, specificity, F1, loss;
- :mod:`~fedscan.common.metrics.histogram` — pooled metrics from summed score histograms;
- :mod:`~fedscan.common.metrics.segmentation` — Dice and IoU from summed overlap counts,
  Hausdorff-95;
- :mod:`~fedscan.common.metrics.crosssite` — the models × sites validation matrix;
- :mod:`~fedscan.common.metrics.plots` — figures (matplotlib, no display);
- :mod:`~fedscan.common.metrics.ratios` — ratios that are undefined, not zero, on an empty
  denominator.
"""
