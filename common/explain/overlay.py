"""One picture per image: the image, each map over it, the predicted scores — as RGB pixels.

Invariants: drawn with matplotlib's object API on an Agg canvas (no pyplot state, no display);
the image is shown at the model's input size in grey, each map in a fixed colour scale 0..1 at
45 % opacity (a predicted mask: its pixels only), and every text is drawn literally
(``parse_math=False``: a ``$`` in a file name is not mathematics). The same pixels become the PNG
and the DICOM Secondary Capture.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from fedscan.common.explain.records import ImageExplanation
from fedscan.common.explain.settings import MASK, TITLES

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PANEL_INCHES = 2.2
DPI = 100


def caption(record: ImageExplanation) -> str:
    """What the image shows, what the model says, and whether that is an error."""
    truth = ", ".join(record.truth) or "no finding"
    predicted = ", ".join(record.predicted) or "no finding"
    errors = f" [{' '.join(record.errors)}]" if record.errors else ""
    return f"{record.key}\ntruth: {truth} · predicted: {predicted}{errors}"


def render(record: ImageExplanation) -> np.ndarray:
    """The overlay of ``record`` as H × W × 3 uint8 RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(method for method, _ in record.maps))
    rows, columns = max(len(methods), 1), len(record.classes) + 1
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.6), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row, method in enumerate(methods):
        _draw_image(axes[row][0], record, show_region=row == 0)
        for column, name in enumerate(record.classes, start=1):
            axis = axes[row][column]
            axis.imshow(record.image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            shown = record.maps[method, name]
            if method == MASK:  # only the predicted pixels are coloured
                shown = np.ma.masked_less(shown, 0.5)
            axis.imshow(
                shown, cmap="jet", vmin=0, vmax=1, alpha=0.45,
                interpolation="bilinear" if method != MASK else "nearest",
            )  # fmt: skip
            score = record.scores[column - 1]
            label = TITLES.get(method, method)
            axis.set_title(f"{label} · {name}\nscore {score:.3f}", fontsize=8, parse_math=False)
            axis.set_axis_off()
    figure.suptitle(caption(record), fontsize=8, parse_math=False)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _draw_image(axis: Axes, record: ImageExplanation, *, show_region: bool) -> None:
    axis.imshow(record.image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if show_region and record.region is not None and record.region.any():
        axis.contour(record.region, levels=[0.5], colors="lime", linewidths=0.8)
    axis.set_title("image (true region: green)", fontsize=8)
    axis.set_axis_off()


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (H × W × 3 uint8) as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
