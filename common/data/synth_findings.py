"""Case mixes and labels.csv rows of the multi-class, multi-label and K-label segmentation sites.

Invariants:

* Prevalences depend on the site index and the seed alone: fixed reference mixes for sites 0–2
  (site 1 has few effusions), then mixes drawn from ``[seed, site, 19]``, as the scanners are.
* Every finding — and every multi-class class — has at least :func:`minimum_count` images at each
  site (3 at 60 images), and at least that many images have no finding, so the binary ``label``
  column (any finding present) always holds both classes. Segmentation draws only the findings
  its K labels name (and cardiomegaly, an enlarged heart), from the multi-label mix.
* A case is the frozenset of the findings drawn in it (names from
  :data:`~fedscan.common.data.synth_phantom.FINDINGS`); the CSV columns are derived from it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from fedscan.common.data.synth_phantom import FINDINGS, STRUCTURES

MULTICLASS_CLASSES = ("normal", "opacity", "nodule", "effusion")
CLASS_COLUMN = "finding"  # multiclass: each image's class name (`label` stays "any finding")
TASKS = ("classification", "multiclass", "multilabel", "segmentation")
NORMAL_WEIGHT = 0.35  # multi-class: the normal class's weight against the findings' prevalences
# Per site, in FINDINGS order (opacity, nodule, effusion, cardiomegaly).
_REFERENCE_PREVALENCES = (
    (0.30, 0.20, 0.25, 0.15),
    (0.22, 0.30, 0.06, 0.25),  # few effusions
    (0.40, 0.12, 0.30, 0.10),
)
Case = frozenset[str]


def finding_prevalences(site_index: int, seed: int) -> dict[str, float]:
    """Each finding's share of a site's images (before the per-finding minimum)."""
    if site_index < len(_REFERENCE_PREVALENCES):
        return dict(zip(FINDINGS, _REFERENCE_PREVALENCES[site_index], strict=True))
    rng = np.random.default_rng([seed, site_index, 19])
    return {finding: float(rng.uniform(0.05, 0.4)) for finding in FINDINGS}


def minimum_count(images: int) -> int:
    """The fewest images any finding, class or the normal group gets at a site."""
    return max(2, images // 20)


def site_cases(
    task: str, labels: int, rng: np.random.Generator, images: int, prevalences: Mapping[str, float]
) -> list[Case]:
    """The findings of each of a site's images, for a non-binary task."""
    if task == "multiclass":
        return _multiclass_cases(rng, images, prevalences)
    cases = _multilabel_cases(rng, images, prevalences)
    if task == "segmentation":
        # Only findings that have a label are drawn; an enlarged heart is still the heart.
        drawn = set(STRUCTURES[:labels]) | {"cardiomegaly"}
        cases = [case & drawn for case in cases]
    return cases


def _multiclass_cases(
    rng: np.random.Generator, images: int, prevalences: Mapping[str, float]
) -> list[Case]:
    weights = np.array(
        [NORMAL_WEIGHT, *(prevalences[name] for name in MULTICLASS_CLASSES[1:])], dtype=float
    )
    counts = _counts(images, weights / weights.sum(), minimum_count(images))
    classes = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    return [_class_case(MULTICLASS_CLASSES[int(index)]) for index in classes]


def _counts(images: int, shares: np.ndarray, minimum: int) -> list[int]:
    """Whole counts near ``images × shares``, each at least ``minimum``, summing to ``images``."""
    counts = [max(minimum, int(round(images * share))) for share in shares]
    while sum(counts) > images:  # take from the largest group that can spare one
        largest = max(range(len(counts)), key=lambda index: counts[index])
        counts[largest] -= 1
    while sum(counts) < images:  # rounding left some over: the most common class takes them
        counts[int(np.argmax(shares))] += 1
    return counts


def _class_case(name: str) -> Case:
    return frozenset() if name == "normal" else frozenset({name})


def _multilabel_cases(
    rng: np.random.Generator, images: int, prevalences: Mapping[str, float]
) -> list[Case]:
    minimum = minimum_count(images)
    none_share = float(np.prod([1.0 - prevalences[name] for name in FINDINGS]))
    normals = min(max(minimum, int(round(images * none_share))), images - minimum)
    # The normals are set aside first; each finding then picks its images from the rest
    # independently, so findings co-occur as they would by chance.
    pool = rng.permutation(images)[normals:]
    present: list[set[str]] = [set() for _ in range(images)]
    for name in FINDINGS:
        count = min(len(pool), max(minimum, int(round(images * prevalences[name]))))
        for case in rng.choice(pool, size=count, replace=False):
            present[int(case)].add(name)
    return [frozenset(names) for names in present]


def csv_header(task: str) -> list[str]:
    """labels.csv columns; ``label`` (any finding) and ``mask`` stay for existing readers."""
    if task == "multiclass":
        return ["file", "sop_instance_uid", "label", CLASS_COLUMN, "mask"]
    if task == "multilabel":
        return ["file", "sop_instance_uid", "label", *FINDINGS, "findings", "mask"]
    return ["file", "sop_instance_uid", "label", "mask"]


def csv_row(task: str, file: str, uid: str, case: Case, mask: str) -> list[str | int]:
    """One image's labels.csv row, in :func:`csv_header` order."""
    label = int(bool(case))
    if task == "multiclass":
        return [file, uid, label, multiclass_name(case), mask]
    if task == "multilabel":
        flags = [int(name in case) for name in FINDINGS]
        return [file, uid, label, *flags, findings_text(case), mask]
    return [file, uid, label, mask]


def multiclass_name(case: Collection[str]) -> str:
    """The multi-class class of a case with at most one finding."""
    (name,) = case or ("normal",)
    return str(name)


def findings_text(case: Collection[str]) -> str:
    """The ``findings`` column: present findings in :data:`FINDINGS` order, ``|``-separated."""
    return "|".join(name for name in FINDINGS if name in case)


def task_error(task: str, labels: int) -> str | None:
    """Why ``task`` with ``labels`` structures cannot be generated, or None."""
    if task not in TASKS:
        return f"--task must be one of {', '.join(TASKS)} (got {task!r})."
    if task != "segmentation" and labels != 1:
        return "--labels is only for --task segmentation."
    if not 1 <= labels <= len(STRUCTURES):
        names = ", ".join(f"{index + 1} {name}" for index, name in enumerate(STRUCTURES))
        return f"--labels must be 1 to {len(STRUCTURES)} (label map values: {names}; got {labels})."
    return None
