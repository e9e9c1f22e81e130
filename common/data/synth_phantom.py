"""Chest-radiograph phantoms: anatomy plus drawn findings, each with the exact mask it covers.

A case is drawn in two steps: :func:`draw_layout` takes every random choice (anatomy jitter, heart
size, where each finding sits) into a :class:`Layout`, and :func:`render_layout` turns a layout
into a density map in [0, 1] (1 = dense, bright on display) and one boolean mask per drawn
structure. Rendering is pure, so a layout rendered twice gives the same arrays. A mask is exactly
what its structure covers: the heart's whole silhouette (the spine stays in front of it), the
pixels the fluid replaced, the nodule's disc, and where the opacities add at least
:data:`FINDING_DENSITY` (a visible change; their faint tails spread further).

The findings are meant to be told apart by a small CNN at 28×28–64×64: diffuse opacities (soft
Gaussian blobs, 1–3, anywhere in the lungs), a nodule (one small, sharp, round dome in an upper or
middle lung zone), an effusion (fluid filling a lung base up to a meniscus that climbs the lateral
wall) and cardiomegaly (a heart shadow about twice the normal width). The binary task's phantom
has no heart and only opacities; its random draws and arithmetic are unchanged, so its files stay
byte-identical.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

FINDINGS = ("opacity", "nodule", "effusion", "cardiomegaly")
# Label-map values are 1 + the index here; label maps with K labels use the first K.
STRUCTURES = ("opacity", "heart", "nodule", "effusion")
FINDING_DENSITY = 0.1  # an opacity's added density where its mask ends (peaks are 0.25–0.4)
HEART_DENSITY = 0.5  # soft tissue: the heart hides the lung behind it, the spine stays brighter
NODULE_DENSITY = 0.42  # peak; the rim keeps 70 % of it, so the edge is sharp
FLUID_DENSITY = 0.6  # a touch denser than soft tissue (0.55): the meniscus shows at the wall

Blob = tuple[float, float, float, float]  # centre y, centre x, sigma, peak added density
Lungs = tuple[list[tuple[float, float]], float, float]  # centres (image left, right), ry, rx


@dataclass(frozen=True)
class Effusion:
    """Fluid in one lung base: ``side`` 0 is the image's left lung, 1 its right (heart side)."""

    side: int
    level: float  # the fluid surface at the lung's centre line (fraction of the image height)
    rise: float  # how far the meniscus climbs at the lateral chest wall


@dataclass(frozen=True)
class Layout:
    """One case's random geometry, in fractions of the image height (y) and width (x)."""

    jitter: tuple[float, ...]  # body and lung position/size, 4 values
    opacities: tuple[Blob, ...] = ()
    heart: tuple[float, float, float, float] | None = None  # centre y, x, radius y, x
    nodule: tuple[float, float, float] | None = None  # centre y, x, radius (fraction of height)
    effusions: tuple[Effusion, ...] = ()


def lungs_of(jitter: Sequence[float]) -> Lungs:
    """Where the two lung fields are for a case's anatomy jitter."""
    lung_ry, lung_rx = 0.30 + jitter[1], 0.15 + jitter[2]
    return [(0.48 + jitter[3], 0.31), (0.48 + jitter[3], 0.69)], lung_ry, lung_rx


def binary_layout(rng: np.random.Generator, positive: bool) -> Layout:
    """The binary task's case: no heart, opacities when positive (the original draw order)."""
    jitter = tuple(rng.normal(0.0, 0.015, size=4))
    opacities = _draw_opacities(rng, lungs_of(jitter), 1) if positive else ()
    return Layout(jitter, opacities)


def draw_layout(rng: np.random.Generator, present: Collection[str]) -> Layout:
    """A case with a heart (enlarged for ``cardiomegaly``) and the ``present`` findings."""
    jitter = tuple(rng.normal(0.0, 0.015, size=4))
    lungs = lungs_of(jitter)
    heart = _draw_heart(rng, enlarged="cardiomegaly" in present)
    # Diffuse: at least two patches, so the finding is never one small blob (that is a nodule).
    opacities = _draw_opacities(rng, lungs, 2) if "opacity" in present else ()
    nodule = _draw_nodule(rng, lungs) if "nodule" in present else None
    effusions = _draw_effusions(rng, lungs) if "effusion" in present else ()
    return Layout(jitter, opacities, heart, nodule, effusions)


def _draw_heart(rng: np.random.Generator, enlarged: bool) -> tuple[float, float, float, float]:
    # Normal: cardiothoracic ratio ≈ 0.35–0.45; enlarged ≈ 0.6–0.7, with a gap between so the
    # finding is learnable, and size varying within each so it is not a constant.
    cy, cx = 0.64 + rng.normal(0.0, 0.01), 0.54 + rng.normal(0.0, 0.01)
    if enlarged:
        return cy, cx, rng.uniform(0.14, 0.17), rng.uniform(0.19, 0.23)
    return cy, cx, rng.uniform(0.10, 0.13), rng.uniform(0.10, 0.14)


def _draw_opacities(rng: np.random.Generator, lungs: Lungs, fewest: int) -> tuple[Blob, ...]:
    # Draw order and arithmetic are the original generator's (fewest = 1): the binary files
    # depend on them.
    centres, lung_ry, lung_rx = lungs
    blobs = []
    for _ in range(int(rng.integers(fewest, fewest + 3))):
        cy, cx = centres[int(rng.integers(0, 2))]
        oy = cy + rng.uniform(-0.6, 0.6) * lung_ry
        ox = cx + rng.uniform(-0.5, 0.5) * lung_rx
        sigma = rng.uniform(0.04, 0.08)
        blobs.append((oy, ox, sigma, rng.uniform(0.25, 0.4)))
    return tuple(blobs)


def _draw_nodule(rng: np.random.Generator, lungs: Lungs) -> tuple[float, float, float]:
    # Upper and middle zones, inside the lung's inner part: clear of the heart, the diaphragm and
    # the chest wall, so the nodule is always surrounded by aerated lung.
    centres, _, _ = lungs
    _, cx = centres[int(rng.integers(0, 2))]
    return rng.uniform(0.27, 0.45), cx + rng.uniform(-0.07, 0.07), rng.uniform(0.03, 0.045)


def _draw_effusions(rng: np.random.Generator, lungs: Lungs) -> tuple[Effusion, ...]:
    centres, lung_ry, _ = lungs
    sides = (0, 1) if rng.random() < 0.25 else (int(rng.integers(0, 2)),)  # a quarter bilateral
    return tuple(
        Effusion(side, centres[side][0] + lung_ry * rng.uniform(0.4, 0.65), rng.uniform(0.04, 0.08))
        for side in sides
    )


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _anatomy(yy: np.ndarray, xx: np.ndarray, jitter: Sequence[float]) -> np.ndarray:
    """Body, lungs, spine and ribs: the original phantom, value for value."""
    image = np.full(yy.shape, 0.05, dtype=np.float32)
    image[_ellipse(yy, xx, 0.52 + jitter[0], 0.5, 0.46, 0.44)] = 0.55  # soft tissue
    centres, lung_ry, lung_rx = lungs_of(jitter)
    for cy, cx in centres:
        image[_ellipse(yy, xx, cy, cx, lung_ry, lung_rx)] = 0.18
    image[(np.abs(xx - 0.5) < 0.045) & (yy > 0.12)] = 0.85  # spine / mediastinum
    for rib in range(6):  # faint rib arcs
        arc = np.abs(yy - (0.25 + 0.08 * rib) - 0.06 * np.cos((xx - 0.5) * 6.0)) < 0.008
        image[arc] += 0.08
    return image


def render_layout(layout: Layout, rows: int, cols: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(density map, masks): one mask per drawn structure (``opacity``, ``heart``, ``nodule``,
    ``effusion``), True where that structure was drawn."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    yy, xx = yy / rows, xx / cols
    image = _anatomy(yy, xx, layout.jitter)
    masks: dict[str, np.ndarray] = {}
    if layout.heart is not None:
        heart = _ellipse(yy, xx, *layout.heart)
        image[heart] = np.maximum(image[heart], HEART_DENSITY)
        masks["heart"] = heart
    if layout.effusions:
        # Fluid replaces what was there (lung, heart), so the mask is exactly what it changed.
        fluid = _fluid(yy, xx, lungs_of(layout.jitter), layout.effusions) & (image < FLUID_DENSITY)
        image[fluid] = FLUID_DENSITY
        masks["effusion"] = fluid
    if layout.opacities:
        opacity = _blobs(yy, xx, layout.opacities)
        masks["opacity"] = opacity >= FINDING_DENSITY
        image = image + opacity
    if layout.nodule is not None:
        dome, masks["nodule"] = _dome(yy, xx, layout.nodule, cols / rows)
        image = image + dome
    return np.clip(image, 0.0, 1.0), masks


def _blobs(yy: np.ndarray, xx: np.ndarray, blobs: Sequence[Blob]) -> np.ndarray:
    extra = np.zeros_like(yy)
    for oy, ox, sigma, peak in blobs:
        extra += peak * np.exp(-((yy - oy) ** 2 + (xx - ox) ** 2) / (2 * sigma**2))
    return extra


def _dome(
    yy: np.ndarray, xx: np.ndarray, nodule: tuple[float, float, float], aspect: float
) -> tuple[np.ndarray, np.ndarray]:
    cy, cx, radius = nodule
    # Distances in fractions of the height, so the nodule is round in pixels on any image shape.
    distance2 = ((yy - cy) ** 2 + ((xx - cx) * aspect) ** 2) / radius**2
    inside = distance2 <= 1.0
    return np.where(inside, NODULE_DENSITY * (1.0 - 0.3 * distance2), 0.0), inside


def _fluid(
    yy: np.ndarray, xx: np.ndarray, lungs: Lungs, effusions: Sequence[Effusion]
) -> np.ndarray:
    centres, lung_ry, lung_rx = lungs
    fluid = np.zeros(yy.shape, dtype=bool)
    for effusion in effusions:
        cy, cx = centres[effusion.side]
        lateral = np.clip((xx - cx) / lung_rx * (1 if effusion.side else -1), 0.0, 1.0)
        surface = effusion.level - effusion.rise * lateral**2  # the meniscus
        fluid |= _ellipse(yy, xx, cy, cx, lung_ry, lung_rx) & (yy >= surface)
    return fluid


def finding_mask(masks: Mapping[str, np.ndarray], present: Collection[str]) -> np.ndarray:
    """Where any of the ``present`` findings is (cardiomegaly: the whole enlarged heart)."""
    shape = next(iter(masks.values())).shape
    union = np.zeros(shape, dtype=bool)
    for finding in present:
        union |= masks["heart" if finding == "cardiomegaly" else finding]
    return union


def label_map(
    masks: Mapping[str, np.ndarray], structures: Sequence[str], shape: tuple[int, int]
) -> np.ndarray:
    """uint8 label map: 0 background, ``i + 1`` where ``structures[i]`` is. Findings are painted
    over the heart (a finding seen through the heart is the finding), later ones over earlier."""
    labels = np.zeros(shape, dtype=np.uint8)
    order = sorted(range(len(structures)), key=lambda index: structures[index] != "heart")
    for index in order:
        if structures[index] in masks:
            labels[masks[structures[index]]] = index + 1
    return labels


def render_case(
    rng: np.random.Generator, rows: int, cols: int, positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The binary task's (density map, finding mask): the mask marks where the opacities add at
    least :data:`FINDING_DENSITY` (all False for a negative)."""
    density, masks = render_layout(binary_layout(rng, positive), rows, cols)
    return density, masks.get("opacity", np.zeros((rows, cols), dtype=bool))


def render_phantom(rng: np.random.Generator, rows: int, cols: int, positive: bool) -> np.ndarray:
    """A chest-radiograph-like density map in [0, 1] (1 = dense, bright on display)."""
    return render_case(rng, rows, cols, positive)[0]
