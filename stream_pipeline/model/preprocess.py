"""Frames → the network's input tensor, per ``model.json``'s ``input`` (CPU path).

Resizing is OpenCV's ``INTER_LINEAR`` (no antialiasing when shrinking), as Roboflow's code resizes;
letterbox pads with the package's ``padding_value`` (0 by default) before normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt

from stream_pipeline.model.geometry import Geometry, geometry_for
from stream_pipeline.model.image_steps import apply_image_steps
from stream_pipeline.model.package import ImageSteps, InputSpec

__all__ = ["Preprocessor", "resize_linear"]


def resize_linear(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """``rgb`` resized to ``width`` × ``height`` with OpenCV's ``INTER_LINEAR``."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    out = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.asarray(out, dtype=np.uint8)


class Preprocessor:
    """Turns host RGB frames into a normalised NCHW float32 batch for one :class:`InputSpec`."""

    def __init__(self, spec: InputSpec, steps: ImageSteps | None = None) -> None:
        self.spec = spec
        self.steps = steps or ImageSteps()
        # (x / scale - mean) / std == x * a + b, per channel: one multiply-add per value.
        std = np.asarray(spec.std, dtype=np.float32)
        self._a = (1.0 / (spec.scale * std)).astype(np.float32)
        self._b = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
        # mean and std are in the network's channel order (BGR for a BGR network), as Roboflow
        # normalises after reordering the channels.

    def resized(self, rgb: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], Geometry]:
        """One frame resized (and padded) to the input size, still uint8 HWC RGB."""
        full_h, full_w = rgb.shape[:2]
        rgb, (crop_x, crop_y) = apply_image_steps(rgb, self.steps)
        h, w = rgb.shape[:2]
        geo = geometry_for(w, h, self.spec)
        if (w, h) != (full_w, full_h):
            geo = replace(
                geo, crop_x=crop_x, crop_y=crop_y, canvas_width=full_w, canvas_height=full_h
            )
        img = resize_linear(rgb, geo.content_width, geo.content_height)
        if self.spec.resize == "letterbox":
            canvas = np.full(
                (geo.input_height, geo.input_width, 3), self.spec.padding_value, np.uint8
            )
            canvas[
                geo.content_y : geo.content_y + geo.content_height,
                geo.content_x : geo.content_x + geo.content_width,
            ] = img
            img = canvas
        return img, geo

    def __call__(
        self, frames: Sequence[npt.NDArray[np.uint8]], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], list[Geometry]]:
        """Batch of RGB frames → (N, 3, H, W) float32 and each frame's geometry."""
        spec = self.spec
        shape = (len(frames), 3, spec.height, spec.width)
        if out is None or out.shape != shape:
            out = np.empty(shape, dtype=np.float32)
        geos = []
        for i, rgb in enumerate(frames):
            img, geo = self.resized(rgb)
            geos.append(geo)
            chw = img.transpose(2, 0, 1)
            if spec.color == "bgr":
                chw = chw[::-1]
            np.multiply(chw, self._a[:, None, None], out=out[i])
            out[i] += self._b[:, None, None]
        return out, geos
