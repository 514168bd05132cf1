"""Mask visualisation: a palette overlay of a class map on its frame, with an optional legend.

The overlay is one numba kernel (palette lookup + one integer alpha blend per pixel, rows in
parallel), so its cost does not grow with the number of classes and no Python code runs per pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from stream_pipeline.config import apply_runtime_defaults
from stream_pipeline.errors import ConfigError

# numba starts its OpenMP pool at the first parallel kernel, not at import: set how its idle
# workers wait (passive, not spinning) here, where the kernels live, before any of them runs.
apply_runtime_defaults()

__all__ = ["DEFAULT_COLORS", "MaskAnnotator", "build_palette"]

UInt8Array = npt.NDArray[np.uint8]

# Hand-picked to stay distinguishable from each other and on typical street/indoor scenes;
# cycled when a model has more classes. Fixed, so a class keeps its colour across runs.
DEFAULT_COLORS: tuple[str, ...] = (
    "#ff3b30",
    "#34c759",
    "#007aff",
    "#ffcc00",
    "#ff9500",
    "#af52de",
    "#00c7be",
    "#ff2d92",
    "#a2845e",
    "#7ed321",
    "#5856d6",
    "#32ade6",
    "#b8860b",
    "#800000",
    "#008080",
    "#808000",
    "#000080",
    "#ff8c69",
    "#e0b0ff",
    "#40e0d0",
    "#c0c0c0",
    "#6b8e23",
    "#ffb6c1",
    "#2f4f4f",
)


def _parse_hex(value: str, what: str) -> tuple[int, int, int]:
    text = value.strip()
    if len(text) != 7 or text[0] != "#":
        raise ConfigError(f"{what}: colour must be '#rrggbb', got {value!r}")
    try:
        rgb = int(text[1:], 16)
    except ValueError:
        raise ConfigError(f"{what}: colour must be '#rrggbb', got {value!r}") from None
    return (rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF


def build_palette(
    class_names: Sequence[str],
    colors: Mapping[str, str] | None = None,
    background_id: int | None = 0,
) -> UInt8Array:
    """An ``(n_classes, 3)`` uint8 RGB palette for a model's classes.

    ``colors`` (``model.json``'s ``colors``: class name → ``'#rrggbb'``) wins where given; names it
    holds that are not classes are ignored. Other classes take :data:`DEFAULT_COLORS` in order of
    their id, skipping the background slot so the first foreground class gets the first colour;
    the background is black unless ``colors`` names it (it is never drawn by default anyway).
    """
    given = colors or {}
    palette = np.zeros((len(class_names), 3), np.uint8)
    for cid, name in enumerate(class_names):
        if name in given:
            palette[cid] = _parse_hex(given[name], f"colors[{name!r}]")
        elif cid != background_id:
            slot = cid if background_id is None or cid < background_id else cid - 1
            palette[cid] = _parse_hex(DEFAULT_COLORS[slot % len(DEFAULT_COLORS)], "default")
    return palette


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Loading the default font parses it each time; legends redraw every frame at one size.
    return ImageFont.load_default(size=size)


@numba.njit(cache=True, nogil=True, parallel=True)
def _overlay(rgb: Any, class_map: Any, palette: Any, alpha: Any, out: Any) -> None:
    height, width = class_map.shape
    n = alpha.shape[0]
    for r in numba.prange(height):
        for c in range(width):
            k = class_map[r, c]
            # Ids beyond the palette (a map from another model) are left as they are.
            a = alpha[k] if k < n else 0
            if a == 0:
                out[r, c, 0] = rgb[r, c, 0]
                out[r, c, 1] = rgb[r, c, 1]
                out[r, c, 2] = rgb[r, c, 2]
            else:
                inv = 256 - a
                for ch in range(3):
                    out[r, c, ch] = (np.int32(rgb[r, c, ch]) * inv + palette[k, ch] * a) >> 8


class MaskAnnotator:
    """Draws a class map over its frame: ``annotate(rgb, class_map) -> new rgb``.

    Each pixel of class ``k`` becomes ``(rgb * (256 - a) + palette[k] * a) >> 8`` with
    ``a = round(opacity * 256)``; pixels of ``background_id`` (when not None) stay untouched.
    With ``legend=True`` a box in the top-left corner lists the colour and name of each class
    present (background excluded). Thread-safe: the annotator holds no per-frame state.
    """

    def __init__(
        self,
        palette: UInt8Array,
        opacity: float = 0.5,
        background_id: int | None = 0,
        legend: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        palette = np.asarray(palette)
        if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
            raise ConfigError(
                f"palette must be uint8 (n_classes, 3), got {palette.dtype} {palette.shape}"
            )
        n = int(palette.shape[0])
        if not 0.0 <= opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {opacity!r}")
        if background_id is not None and not 0 <= background_id < n:
            raise ConfigError(f"background_id {background_id} is not a class id (0..{n - 1})")
        if class_names is not None and len(class_names) != n:
            raise ConfigError(f"{len(class_names)} class names for a palette of {n} colours")
        self.palette: UInt8Array = np.ascontiguousarray(palette)
        self.opacity = float(opacity)
        self.background_id = background_id
        self.legend = legend
        self.class_names: tuple[str, ...] = (
            tuple(class_names) if class_names is not None else tuple(f"class {i}" for i in range(n))
        )
        self._alpha = np.full(n, round(self.opacity * 256), np.int32)
        if background_id is not None:
            self._alpha[background_id] = 0
        # Load (or compile) the overlay kernel now, where the annotator is made, instead of in a
        # sink's thread while the first results of a live stream pile up behind it.
        self.annotate(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8))

    @classmethod
    def for_classes(
        cls,
        class_names: Sequence[str],
        colors: Mapping[str, str] | None = None,
        background_id: int | None = 0,
        opacity: float = 0.5,
        legend: bool = False,
    ) -> MaskAnnotator:
        """An annotator for a model's classes, with :func:`build_palette`'s colours."""
        palette = build_palette(class_names, colors, background_id)
        return cls(palette, opacity, background_id, legend, class_names)

    def annotate(
        self,
        rgb: UInt8Array,
        class_map: npt.NDArray[np.integer[Any]],
        present_ids: Sequence[int] | None = None,
    ) -> UInt8Array:
        """A new H×W×3 uint8 image: ``rgb`` with ``class_map`` drawn over it (``rgb`` unchanged).

        ``present_ids`` (e.g. ``SegResult.present_class_ids``) saves a pass over the map when the
        legend is on; it is ignored otherwise.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
        if class_map.shape != rgb.shape[:2]:
            raise ValueError(f"class_map is {class_map.shape}, the frame {rgb.shape[:2]}")
        if class_map.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"class_map must be uint8 or uint16, got {class_map.dtype}")
        out = np.empty(rgb.shape, np.uint8)
        _overlay(
            np.ascontiguousarray(rgb),
            np.ascontiguousarray(class_map),
            self.palette,
            self._alpha,
            out,
        )
        if self.legend:
            if present_ids is None:
                counts = np.bincount(class_map.ravel(), minlength=len(self.palette))
                present_ids = np.flatnonzero(counts).tolist()
            self._draw_legend(out, present_ids)
        return out

    def _draw_legend(self, out: UInt8Array, present_ids: Sequence[int]) -> None:
        n = len(self.palette)
        ids = [i for i in present_ids if 0 <= i < n and i != self.background_id]
        height, width = out.shape[:2]
        size = min(32, max(10, height // 36))
        margin, pad = max(2, size // 3), max(2, size // 4)
        row = size + pad
        rows = min(len(ids), (height - 2 * margin - pad) // row)
        if rows <= 0:
            return
        font = _font(size)
        label_w = max(int(font.getlength(self.class_names[i])) for i in ids[:rows])
        x1 = min(width, margin + pad + size + pad + label_w + pad)
        y1 = margin + pad + rows * row
        if x1 <= margin:
            return
        # Only the legend's corner goes through Pillow; the rest of the frame is not copied again.
        panel = out[margin:y1, margin:x1]
        panel //= 3  # darkened backing so white labels read on any scene
        image = Image.fromarray(panel)
        draw = ImageDraw.Draw(image)
        for j, cid in enumerate(ids[:rows]):
            top = pad + j * row
            colour = (
                int(self.palette[cid, 0]),
                int(self.palette[cid, 1]),
                int(self.palette[cid, 2]),
            )
            draw.rectangle((pad, top, pad + size - 1, top + size - 1), fill=colour)
            draw.text(
                (pad + size + pad, top), self.class_names[cid], fill=(255, 255, 255), font=font
            )
        panel[...] = np.asarray(image)
