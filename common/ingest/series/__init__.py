"""Volumes: DICOM series (one file per slice, or one enhanced multi-frame object) assembled at the
site into checked, oriented, resampled volumes.

Modules, in the order a series meets them:

- :mod:`~fedscan.common.ingest.series.slices` — each file's header as slice facts (position,
  orientation, spacing, rescale), per frame for an enhanced multi-frame object;
- :mod:`~fedscan.common.ingest.series.geometry` — slices grouped by SeriesInstanceUID, ordered
  along the slice normal and checked before anything is stacked (:func:`plan_series`);
- :mod:`~fedscan.common.ingest.series.intensity` — the site's intensity policy (a CT window or HU
  range, MR percentiles);
- :mod:`~fedscan.common.ingest.series.resample` — to the canonical patient frame, the model's voxel
  spacing and its input size;
- :mod:`~fedscan.common.ingest.series.volume_masks` — 3-D masks (.npy, NIfTI, DICOM SEG) checked
  against the series' geometry;
- :mod:`~fedscan.common.ingest.series.assemble` — :func:`ingest_volumes`, the whole pass;
  :mod:`~fedscan.common.ingest.series.report` — what it found, per series.

Invariants: a series is one sample (one patient's scan) and ends accepted or rejected with one
code; slices are ordered by their position along the normal, never by file name or
InstanceNumber; every size is checked against the limits before memory is allocated for it;
nothing that may leave the site holds a path or an identifier.
"""
