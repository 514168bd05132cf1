"""Roboflow's ``image_pre_processing`` on a frame: static crop, grayscale, contrast.

Applied in Roboflow's order (crop, grayscale, contrast) and with its arithmetic, so that the network
sees the same pixels: the crop box is ``int(percent / 100 × size)``; grayscale is OpenCV's
``RGB2GRAY`` repeated over three channels; contrast stretching and histogram equalisation are
scikit-image's ``rescale_intensity`` between the 2nd and 98th percentile and ``equalize_hist``,
written here in numpy; adaptive equalisation (CLAHE) calls scikit-image itself (then needed).
"""

from __future__ import annotations

import importlib
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from stream_pipeline.errors import ModelError
from stream_pipeline.model.package import ImageSteps

__all__ = ["apply_image_steps", "crop_box"]


def crop_box(width: int, height: int, percent: tuple[int, int, int, int]) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)`` in pixels of a static crop given in percent of the frame."""
    x_min, y_min, x_max, y_max = percent
    return (
        int(x_min / 100 * width),
        int(y_min / 100 * height),
        int(x_max / 100 * width),
        int(y_max / 100 * height),
    )


def _contrast_stretching(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    low, high = (float(v) for v in np.percentile(image, (2, 98)))
    clipped = np.clip(image, low, high)
    if low == high:
        return np.clip(clipped, 0, 255).astype(np.uint8)
    return ((clipped - low) / (high - low) * 255.0).astype(np.uint8)


def _histogram_equalization(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # equalize_hist on the float32 image in [0, 1], over all channels together.
    img = image.astype(np.float32) / np.float32(255)
    first, last = img.min(), img.max()
    if first == last:
        first, last = first - np.float32(0.5), last + np.float32(0.5)
    hist, edges = np.histogram(img.ravel(), bins=256, range=(first, last))
    centres = (edges[:-1] + edges[1:]) / 2
    cdf = hist.cumsum()
    cdf = (cdf / float(cdf[-1])).astype(np.float32)
    out = np.interp(img.ravel(), centres, cdf).reshape(img.shape).astype(np.float32)
    return np.asarray(out * np.float32(255)).astype(np.uint8)


def _adaptive_equalization(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    try:  # optional: only packages that ask for CLAHE need it
        exposure: Any = importlib.import_module("skimage.exposure")
    except ImportError:
        raise ModelError(
            "the package's contrast 'Adaptive Equalization' needs scikit-image "
            "(pip install scikit-image)"
        ) from None
    adapted: Any = exposure.equalize_adapthist(image.astype(np.float32) / 255, clip_limit=0.03)
    return np.asarray(adapted * 255).astype(np.uint8)


_CONTRAST = {
    "adaptive-equalization": _adaptive_equalization,
    "contrast-stretching": _contrast_stretching,
    "histogram-equalization": _histogram_equalization,
}


def apply_image_steps(
    rgb: npt.NDArray[np.uint8], steps: ImageSteps
) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """The frame after ``steps`` and the crop's top-left corner (``(0, 0)`` without a crop)."""
    offset = (0, 0)
    if steps.static_crop is not None:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = crop_box(w, h, steps.static_crop)
        if x1 <= x0 or y1 <= y0:
            raise ModelError(f"static crop {steps.static_crop} leaves nothing of a {w}x{h} frame")
        rgb = rgb[y0:y1, x0:x1]
        offset = (x0, y0)
    if steps.grayscale:
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    if steps.contrast is not None:
        rgb = _CONTRAST[steps.contrast](np.ascontiguousarray(rgb))
    return rgb, offset
