"""Samples → tensors: what a site trains and validates on.

Modules:

- :mod:`~fedscan.common.data.imageset` — :class:`ImageSet` and :class:`SiteData`, the core types;
- :mod:`~fedscan.common.data.site` — a site folder, ingested and split by patient;
- :mod:`~fedscan.common.data.npz` — MedMNIST-style ``.npz`` files: splits and shards;
- :mod:`~fedscan.common.data.partition` — iid and Dirichlet shards of an npz across simulated sites;
- :mod:`~fedscan.common.data.sources` — where a site's data comes from (picklable descriptions);
- :mod:`~fedscan.common.data.augment` — training-time augmentation, per image (the reference);
- :mod:`~fedscan.common.data.batch_augment` — the same, batched on the training device;
- :mod:`~fedscan.common.data.synth` — synthetic DICOM hospitals for tests, demos and benchmarks.
"""
