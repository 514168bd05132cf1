"""Procedural street scenes with exact per-pixel labels: training data and a live demo source.

A :class:`StreetScene` is a street seen from a fixed camera (on a pole or a parked car): a sky with
clouds, facades of varied buildings with windows and shop fronts, a road in perspective with lane
markings and crosswalks, street trees, hedges and parks, sidewalks with lamp posts, signs and street
furniture, vehicles of several shapes driving along the road and across an intersection, and people
walking along the sidewalks and over crosswalks. Every pixel's class is known exactly; the ids index
:data:`CLASS_NAMES`, and ``background`` is everything that is none of the others (pavement, curbs,
lots, poles, signs, furniture).

Each seed is a different street (layout, facade styles, weather, light, camera); ``render(t)``
animates it. The result depends only on ``(seed, t)``.

Speed: everything that does not move is drawn once per seed, in world coordinates (a flat ground,
two facade planes, billboards) with a depth buffer. A frame is a crop of that layer (the camera
sways a little) with the moving sprites blitted far to near against the depth buffer, then a global
exposure and colour temperature that drift with ``t``, and sensor noise. That is a few milliseconds
per 640×360 frame on one core.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["CLASS_NAMES", "StreetScene"]

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "sky",
    "road",
    "building",
    "vegetation",
    "vehicle",
    "person",
)

_BACKGROUND, _SKY, _ROAD, _BUILDING, _VEGETATION, _VEHICLE, _PERSON = range(7)

_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]
_Mask = npt.NDArray[np.bool_]
_RGB = npt.NDArray[np.float32]  # one colour, shape (3,), 0..255
_Shape = tuple[slice, slice, _Mask]  # a painter's window (rows, columns) and the mask in it

_PPM = 64.0  # sprite pixels per metre at the finest mip level
_WALK_PHASES = 8  # frames of a walk cycle
_STRIDE_M = 1.3  # metres walked per walk cycle
_OPEN, _HOUSE, _PARK = 0, 1, 2  # facade segment kinds
_LIT_WINDOW = np.array((235, 205, 140), np.float32)


def _hsv(h: float, s: float, v: float) -> _RGB:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _vary(rng: np.random.Generator, colour: Sequence[float] | _RGB, amount: float) -> _RGB:
    """``colour`` with its brightness and each channel jittered by up to ``amount``."""
    c = np.asarray(colour, dtype=np.float32)
    gain = 1.0 + amount * (rng.random(3, dtype=np.float32) - 0.5)
    gain *= 1.0 + amount * (float(rng.random()) - 0.5)
    return np.clip(c * gain, 0.0, 255.0).astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float) -> _F32:
    """Smooth value noise in [0, 1]: a random grid upsampled bicubically (Pillow, in C)."""
    cy, cx = max(cell_y, 1.0), max(cell_x, 1.0)
    gh, gw = int(h / cy) + 4, int(w / cx) + 4
    grid = rng.random((gh, gw), dtype=np.float32)
    big = Image.fromarray(grid).resize(
        (math.ceil(gw * cx), math.ceil(gh * cy)), Image.Resampling.BICUBIC
    )
    oy, ox = int(cy + rng.random() * cy), int(cx + rng.random() * cx)
    arr = np.asarray(big, dtype=np.float32)[oy : oy + h, ox : ox + w]
    return np.clip(arr, 0.0, 1.0)


def _fractal(
    rng: np.random.Generator, h: int, w: int, cell: float, octaves: int, stretch: float = 1.0
) -> _F32:
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += amp * _noise(rng, h, w, cell, cell * stretch)
        norm += amp
        amp *= 0.5
        cell *= 0.5
        if cell < 1.5:
            break
    return total / norm


def _hash01(*keys: npt.NDArray[np.int64] | int) -> _F32:
    """A deterministic pseudo-random number in [0, 1) per element of the integer keys."""
    h: npt.NDArray[np.int64] | int = 0x2545F491
    for i, k in enumerate(keys):
        h = (h ^ (np.asarray(k, dtype=np.int64) * (0x9E3779B1 + 2 * i))) * 0x85EBCA6B
        h = h ^ (np.asarray(h, dtype=np.int64) >> 13)
    return ((np.asarray(h, dtype=np.int64) >> 8) & 0xFFFF).astype(np.float32) / 65536.0


# --------------------------------------------------------------------------------------- sprites


class _Sprite:
    """An RGBA image of an object in metres, anchored at its bottom centre.

    Mip levels (each half the size of the one before) are made on first use, as uint8.
    """

    def __init__(self, rgb: _F32, alpha: _F32, width_m: float, height_m: float) -> None:
        self.width_m, self.height_m = width_m, height_m
        self.rows = alpha.shape[0]
        self._float = [(rgb * alpha[..., None], alpha)]  # premultiplied
        self._levels: dict[int, tuple[_U8, _U8]] = {}

    def level(self, hpx: float) -> tuple[_U8, _U8]:
        """(rgb, alpha) of the coarsest level still at least ``hpx`` rows tall."""
        k = max(int(math.log2(max(self.rows / hpx, 1.0))), 0)
        while k >= len(self._float):
            pm, a = self._float[-1]
            h2, w2 = a.shape[0] // 2, a.shape[1] // 2
            if h2 < 4 or w2 < 2:
                k = len(self._float) - 1
                break
            self._float.append((_half(pm[: 2 * h2, : 2 * w2]), _half(a[: 2 * h2, : 2 * w2])))
        if k not in self._levels:
            pm, a = self._float[k]
            rgb = pm / np.maximum(a, 1e-6)[..., None]
            self._levels[k] = (
                np.clip(rgb + 0.5, 0, 255).astype(np.uint8),
                np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8),
            )
        return self._levels[k]


class _Painter:
    """Draws an object into RGBA in metres: ``x`` right from its centre, ``y`` up from the
    ground."""

    def __init__(self, width_m: float, height_m: float) -> None:
        self.w = max(2, round(width_m * _PPM))
        self.h = max(2, round(height_m * _PPM))
        self.width_m, self.height_m = self.w / _PPM, self.h / _PPM
        self.x = ((np.arange(self.w, dtype=np.float32) + 0.5) / _PPM - self.width_m / 2)[None, :]
        self.y = (self.height_m - (np.arange(self.h, dtype=np.float32) + 0.5) / _PPM)[:, None]
        self.rgb = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)

    def _window(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[slice, slice, _F32, _F32]:
        """Rows and columns covering the box in metres, and their coordinates."""
        half = self.width_m / 2
        c0, c1 = max(int((x0 + half) * _PPM) - 1, 0), min(int((x1 + half) * _PPM) + 2, self.w)
        r0 = max(int((self.height_m - y1) * _PPM) - 1, 0)
        r1 = min(int((self.height_m - y0) * _PPM) + 2, self.h)
        rs, cs = slice(r0, max(r0, r1)), slice(c0, max(c0, c1))
        return rs, cs, self.x[:, cs], self.y[rs]

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> _Shape:
        rs, cs, x, y = self._window(x0, x1, y0, y1)
        return rs, cs, (x >= x0) & (x < x1) & (y >= y0) & (y < y1)

    def rounded(self, x0: float, x1: float, y0: float, y1: float, r: float) -> _Shape:
        rs, cs, x, y = self._window(x0, x1, y0, y1)
        dx = np.maximum(np.maximum(x0 + r - x, x - (x1 - r)), 0.0)
        dy = np.maximum(np.maximum(y0 + r - y, y - (y1 - r)), 0.0)
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        return rs, cs, inside & (dx * dx + dy * dy <= r * r)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> _Shape:
        rs, cs, x, y = self._window(cx - rx, cx + rx, cy - ry, cy + ry)
        return rs, cs, ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0

    def poly(self, pts: Sequence[tuple[float, float]]) -> _Shape:
        """Inside of a convex polygon given counter-clockwise."""
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        rs, cs, x, y = self._window(min(xs), max(xs), min(ys), max(ys))
        m = np.ones((y.shape[0], x.shape[1]), np.bool_)
        for (ax, ay), (bx, by) in zip(pts, [*pts[1:], pts[0]], strict=True):
            m &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0.0
        return rs, cs, m

    def capsule(self, ax: float, ay: float, bx: float, by: float, r: float) -> _Shape:
        rs, cs, x, y = self._window(
            min(ax, bx) - r, max(ax, bx) + r, min(ay, by) - r, max(ay, by) + r
        )
        vx, vy = bx - ax, by - ay
        t = np.clip(((x - ax) * vx + (y - ay) * vy) / max(vx * vx + vy * vy, 1e-9), 0, 1)
        return rs, cs, (x - ax - t * vx) ** 2 + (y - ay - t * vy) ** 2 <= r * r

    def paint(self, shape: _Shape, colour: _RGB, shade: float | _F32 = 1.0) -> None:
        rs, cs, m = shape
        if not isinstance(shade, float):
            shade = shade[rs][..., None]
        np.copyto(self.rgb[rs, cs], colour * shade, where=m[..., None])
        np.copyto(self.alpha[rs, cs], np.float32(1.0), where=m)

    def vshade(self, lo: float, hi: float, y0: float, y1: float) -> _F32:
        """A vertical shading from ``lo`` at ``y0`` to ``hi`` at ``y1``."""
        ramp = np.clip((self.y - y0) / max(y1 - y0, 1e-6), 0, 1)
        shade: _F32 = (lo + (hi - lo) * ramp).astype(np.float32)
        return shade

    def sprite(self, flip: bool = False) -> _Sprite:
        rgb, alpha = self.rgb, self.alpha
        if flip:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        return _Sprite(rgb, alpha, self.width_m, self.height_m)


def _half(a: _F32) -> _F32:
    """2×2 box downsampling (even sizes)."""
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * np.float32(0.25)


_CAR_COLOURS = (
    (236, 236, 234), (22, 23, 26), (168, 171, 176), (98, 100, 104), (160, 22, 24),
    (28, 55, 130), (18, 32, 70), (30, 85, 50), (215, 175, 30), (200, 90, 25),
    (110, 70, 45), (200, 190, 160), (120, 20, 40), (60, 120, 170),
)  # fmt: skip

_VEHICLE_KINDS = ("car", "car", "car", "suv", "suv", "van", "truck", "bus")


def _vehicle(rng: np.random.Generator, kind: str, view: str, flip: bool = False) -> _Sprite:
    """A vehicle sprite: ``view`` is ``rear``, ``front`` or ``side`` (facing +x, or -x if
    ``flip``)."""
    w = {"car": 1.78, "suv": 1.92, "van": 2.0, "truck": 2.5, "bus": 2.55}[kind] + rng.uniform(
        -0.08, 0.05
    )
    ht = {"car": 1.47, "suv": 1.78, "van": 2.25, "truck": 3.3, "bus": 3.15}[kind]
    ht += rng.uniform(-0.1, 0.15)
    length = {"car": 4.5, "suv": 4.8, "van": 5.3, "truck": 8.5, "bus": 11.0}[kind]
    length += rng.uniform(-0.3, 0.6)
    hb = {"car": 0.9, "suv": 1.05, "van": 1.05, "truck": 1.2, "bus": 1.1}[kind]
    clr = 0.16 if kind == "car" else 0.25
    body = _vary(rng, _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))], 0.2)
    if kind == "bus":
        body = _vary(rng, _CAR_COLOURS[int(rng.choice([0, 4, 5, 8, 9, 13]))], 0.15)
    glass = _vary(rng, (38, 44, 54), 0.4)
    tyre = np.asarray((24, 24, 26), np.float32)
    dark = np.asarray((38, 38, 40), np.float32)
    if view == "side":
        p = _Painter(length + 0.1, ht + 0.02)
        half, r = length / 2, 0.33 if kind in ("car", "suv") else 0.48
        wx = (half - 0.85, -half + 0.85) if kind != "bus" else (half - 2.5, -half + 2.7)
        low = p.rounded(-half, half, clr + 0.08, hb if kind in ("car", "suv") else ht, 0.22)
        p.paint(low, body, p.vshade(0.72, 1.1, clr, ht))
        if kind in ("car", "suv"):
            cab = p.poly([(-half + 0.8, hb), (half - 0.9, hb), (half - 1.6, ht), (-half + 1.4, ht)])
            p.paint(cab, body, 1.05)
            win = p.poly(
                [(-half + 1.05, hb + 0.06), (half - 1.1, hb + 0.06),
                 (half - 1.68, ht - 0.07), (-half + 1.55, ht - 0.07)]
            )  # fmt: skip
            p.paint(win, glass, p.vshade(0.8, 1.5, hb, ht))
            p.paint(p.rect(-0.12, 0.0, hb, ht), body, 0.9)
            p.paint(p.rect(-0.02, 0.0, clr + 0.2, hb - 0.05), body, 0.6)
        elif kind == "truck":
            p.paint(p.rect(-half, half - 2.3, clr + 0.45, ht), _vary(rng, (225, 225, 220), 0.3))
            p.paint(p.rect(half - 2.2, half, clr + 0.1, ht - 0.45), body, 1.0)
            p.paint(p.rect(half - 1.5, half - 0.15, ht - 1.4, ht - 0.65), glass, 1.2)
        else:  # van, bus: a band of windows
            y0, y1 = (hb + 0.15, ht - 0.3)
            p.paint(p.rect(-half + 0.3, half - 0.2, y0, y1), glass, p.vshade(0.9, 1.4, y0, y1))
            step = 1.3 if kind == "bus" else 1.6
            for px in np.arange(-half + 0.3 + step, half - 0.5, step):
                p.paint(p.rect(float(px), float(px) + 0.12, y0, y1), body, 0.9)
        for cx in wx:
            p.paint(p.ellipse(cx, r, r + 0.1, r + 0.1), dark)
            p.paint(p.ellipse(cx, r, r, r), tyre)
            p.paint(p.ellipse(cx, r, r * 0.5, r * 0.5), np.asarray((150, 150, 152), np.float32))
        p.paint(
            p.rect(half - 0.12, half, hb - 0.3, hb - 0.1), np.asarray((235, 230, 200), np.float32)
        )
        p.paint(
            p.rect(-half, -half + 0.1, hb - 0.3, hb - 0.1), np.asarray((180, 20, 20), np.float32)
        )
        return p.sprite(flip)
    p = _Painter(w + 0.3, ht + 0.02)
    hw = w / 2
    for s in (-1.0, 1.0):
        x0, x1 = sorted((s * (hw - 0.08), s * (hw - 0.4)))
        p.paint(p.rect(x0, x1, 0.0, clr + 0.3), tyre)
    if kind in ("car", "suv"):
        p.paint(p.rounded(-hw, hw, clr, hb, 0.14), body, p.vshade(0.75, 1.05, clr, hb))
        top = hw * (0.72 if kind == "car" else 0.85)
        p.paint(p.poly([(-hw + 0.05, hb), (hw - 0.05, hb), (top, ht), (-top, ht)]), body, 1.08)
        wt, wb = (ht - 0.07, hb + 0.1) if view == "rear" else (ht - 0.06, hb + 0.04)
        p.paint(
            p.poly([(-hw + 0.16, wb), (hw - 0.16, wb), (top - 0.07, wt), (-top + 0.07, wt)]),
            glass,
            p.vshade(0.8, 1.45, wb, wt),
        )
        for s in (-1.0, 1.0):  # mirrors
            x0, x1 = sorted((s * (hw - 0.02), s * (hw + 0.13)))
            p.paint(p.rect(x0, x1, hb + 0.02, hb + 0.17), body, 0.85)
    else:  # van, truck, bus: boxy
        p.paint(p.rounded(-hw, hw, clr, ht, 0.12), body, p.vshade(0.78, 1.05, clr, ht))
        if kind == "truck" and view == "rear":
            p.paint(p.rect(-0.03, 0.03, clr + 0.4, ht - 0.1), dark)
        elif view == "front" or kind == "bus":
            y0 = hb + (0.1 if view == "front" else 0.9)
            p.paint(p.rect(-hw + 0.12, hw - 0.12, y0, ht - 0.25), glass, p.vshade(0.8, 1.4, y0, ht))
        else:
            for s in (-1.0, 1.0):
                x0, x1 = sorted((s * 0.05, s * (hw - 0.15)))
                p.paint(p.rect(x0, x1, hb + 0.25, ht - 0.3), glass, 1.1)
    lamp = (185, 18, 22) if view == "rear" else (236, 234, 215)
    for s in (-1.0, 1.0):
        x0, x1 = sorted((s * (hw - 0.04), s * (hw - 0.34)))
        p.paint(p.rect(x0, x1, hb - 0.28, hb - 0.08), np.asarray(lamp, np.float32))
    p.paint(p.rect(-hw + 0.03, hw - 0.03, clr, clr + 0.17), dark, 1.2)
    if view == "front":
        p.paint(p.rect(-0.45, 0.45, hb - 0.34, hb - 0.1), dark, 0.8)
    plate = (232, 232, 224) if rng.random() < 0.8 else (230, 200, 40)
    p.paint(p.rect(-0.26, 0.26, clr + 0.2, clr + 0.33), np.asarray(plate, np.float32))
    return p.sprite()


def _person(rng: np.random.Generator, view: str, phase: int, flip: bool = False) -> _Sprite:
    """A person at ``phase`` of the walk cycle: ``view`` is ``front``, ``back`` or ``side``
    (walking to +x, -x if ``flip``). The same generator state gives the same person."""
    hp = rng.uniform(1.5, 1.95)
    build = rng.uniform(0.85, 1.2)
    skin = _vary(
        rng, _hsv(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.95)), 0.1
    )
    hair = _vary(
        rng,
        ((25, 20, 18), (70, 45, 25), (180, 150, 90), (140, 140, 140))[int(rng.integers(4))],
        0.3,
    )
    shirt = _hsv(rng.random(), rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.95))
    legs_c = _vary(
        rng,
        ((30, 40, 70), (25, 25, 28), (90, 90, 95), (150, 130, 95), (60, 80, 120))[
            int(rng.integers(5))
        ],
        0.3,
    )
    shoes = _vary(rng, (30, 28, 26), 0.5)
    coat = rng.random() < 0.3
    bag = rng.random() < 0.35
    bag_c = _vary(rng, (60, 45, 35), 0.6)
    head_r, hip, shoulder = 0.062 * hp, 0.52 * hp, 0.81 * hp
    leg_r, arm_r = 0.046 * hp * build**0.5, 0.03 * hp * build**0.5
    torso_w = (0.24 if view != "side" else 0.14) * hp * build
    ph = 2 * math.pi * phase / _WALK_PHASES
    p = _Painter(0.38 * hp + 0.2, hp + 0.02)
    torso_lo = hip - (0.12 * hp if coat else 0.0)
    if view == "side":
        leg = hip - leg_r
        for sgn, shade in ((1.0, 0.75), (-1.0, 1.0)):
            a = 0.42 * math.sin(ph) * sgn
            fx, fy = leg * math.sin(a), hip - leg * math.cos(a)
            p.paint(p.capsule(0.0, hip, fx, fy, leg_r), legs_c, shade)
            p.paint(p.capsule(fx, fy, fx + 0.1, fy, leg_r * 0.8), shoes)
            if sgn > 0:  # the far arm, behind the torso
                arm = 0.36 * hp
                b = -0.35 * math.sin(ph)
                p.paint(
                    p.capsule(0, shoulder, arm * math.sin(b), shoulder - arm * math.cos(b), arm_r),
                    shirt,
                    0.7,
                )
        p.paint(
            p.rounded(-torso_w / 2, torso_w / 2, torso_lo, shoulder + 0.03 * hp, 0.04 * hp),
            shirt,
            p.vshade(0.8, 1.1, hip, shoulder),
        )
        if bag:
            p.paint(
                p.rounded(
                    -torso_w / 2 - 0.12, -torso_w / 2 + 0.02, hip + 0.05 * hp, shoulder - 0.02, 0.03
                ),
                bag_c,
            )
        b = 0.35 * math.sin(ph)
        arm = 0.36 * hp
        ex, ey = arm * math.sin(b), shoulder - arm * math.cos(b)
        p.paint(p.capsule(0, shoulder, ex, ey, arm_r), shirt, 0.95)
        p.paint(p.ellipse(ex, ey, arm_r, arm_r), skin)
    else:
        for sgn in (-1.0, 1.0):
            lift = max(0.0, math.sin(ph) * sgn) * 0.07 * hp
            lx = sgn * 0.055 * hp * build
            p.paint(p.capsule(lx, hip, lx, lift + leg_r, leg_r), legs_c, 1.0 - 0.15 * (lift > 0))
            p.paint(p.rounded(lx - leg_r, lx + leg_r, lift, lift + 0.05, 0.02), shoes)
            sx = sgn * (torso_w / 2 + arm_r * 0.6)
            ey = shoulder - 0.36 * hp + max(0.0, -math.sin(ph) * sgn) * 0.03 * hp
            p.paint(p.capsule(sx, shoulder - 0.02, sx + sgn * 0.02, ey, arm_r), shirt, 0.92)
            p.paint(p.ellipse(sx + sgn * 0.02, ey, arm_r, arm_r), skin)
        p.paint(
            p.rounded(-torso_w / 2, torso_w / 2, torso_lo, shoulder + 0.03 * hp, 0.05 * hp),
            shirt,
            p.vshade(0.8, 1.1, hip, shoulder),
        )
        if bag:
            p.paint(
                p.rounded(torso_w / 2 - 0.02, torso_w / 2 + 0.1, hip - 0.05, hip + 0.2, 0.03), bag_c
            )
    hy = hp - head_r * 1.1
    p.paint(p.rect(-0.025 * hp, 0.025 * hp, shoulder, hy), skin, 0.9)
    p.paint(p.ellipse(0.0, hy, head_r, head_r * 1.15), skin)
    if view == "back":
        p.paint(p.ellipse(0.0, hy + 0.01, head_r * 1.05, head_r * 1.15), hair)
    elif view == "side":
        p.paint(p.ellipse(-0.2 * head_r, hy + 0.2 * head_r, head_r * 0.9, head_r), hair)
    else:
        p.paint(p.ellipse(0.0, hy + 0.5 * head_r, head_r * 1.02, head_r * 0.7), hair)
    return p.sprite(flip)


# ----------------------------------------------------------------------------------------- scene

_FACADE_COLOURS = (
    (160, 82, 60), (178, 100, 72), (120, 60, 45), (205, 190, 160), (220, 215, 205),
    (150, 150, 146), (120, 118, 112), (190, 170, 130), (170, 120, 90), (95, 100, 105),
    (230, 225, 215), (140, 105, 80),
)  # fmt: skip
_PAVEMENT_COLOURS = ((172, 172, 166), (190, 180, 162), (165, 128, 115), (150, 150, 146))
_POLE_COLOURS = ((110, 112, 115), (45, 50, 48), (30, 55, 40), (150, 150, 150))


class _Mover:
    """A vehicle or person moving at constant speed along x or z, wrapping inside ``[lo, hi)``.

    Its sprites (one, or a walk cycle of ``phases``) are drawn on first use by ``make(phase)``.
    """

    def __init__(
        self,
        make: Callable[[int], _Sprite],
        phases: int,
        label: int,
        xz: tuple[float, float],
        vx: float,
        vz: float,
        wrap: tuple[float, float],
    ) -> None:
        self.make, self.phases, self.label = make, phases, label
        self.x, self.z = xz
        self.vx, self.vz = vx, vz
        self.lo, self.hi = wrap
        self._sprites: dict[int, _Sprite] = {}

    def at(self, t: float) -> tuple[float, float, int]:
        """Position ``(x, z)`` and walk phase at time ``t``."""
        along_z = self.vx == 0.0
        p0, v = (self.z, self.vz) if along_z else (self.x, self.vx)
        p = self.lo + (p0 - self.lo + v * t) % (self.hi - self.lo)
        walked = abs(v * t) + 7.0 * p0
        phase = int(walked / _STRIDE_M * _WALK_PHASES) % self.phases
        return (self.x, p, phase) if along_z else (p, self.z, phase)

    def sprite(self, phase: int) -> _Sprite:
        if phase not in self._sprites:
            self._sprites[phase] = self.make(phase)
        return self._sprites[phase]


@dataclass(frozen=True)
class _Segment:
    """A stretch of one street side's facade plane, ``start <= z < end``."""

    start: float
    end: float
    kind: int
    height: float
    colour: _RGB
    glass: _RGB
    awning: _RGB
    window_step: float
    window_width: float
    window_height: float
    floor_height: float
    ground_floor: float
    shop: bool
    lit: float


class StreetScene:
    """One procedurally generated street, rendered at any time ``t`` (seconds).

    ``width``×``height`` is the frame size; ``seed`` (≥ 0) picks the street. Construction draws
    the static layer (tens of milliseconds); :meth:`render` is cheap.
    """

    def __init__(self, width: int = 640, height: int = 360, seed: int = 0) -> None:
        if width < 32 or height < 32:
            raise ValueError(f"scene size must be at least 32×32, got {width}×{height}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng(seed)
        self._s = width / 640.0
        self._m = m = max(2, round(6 * self._s))
        self._ch, self._cw = height + 2 * m, width + 2 * m
        self._f = width * rng.uniform(0.75, 1.05)
        self._yh = m + height * rng.uniform(0.33, 0.5)
        self._vx = m + width * rng.uniform(0.35, 0.65)
        self._hc = rng.uniform(1.5, 4.0)
        self._zfar = rng.uniform(110.0, 220.0)
        self._plan_street(rng)
        self._draw_static(rng)
        self._movers = self._plan_movers(rng)
        # Light and sensor.
        self._exposure = rng.uniform(0.68, 1.25)
        self._temp = rng.uniform(-1.0, 1.0)
        self._light_waves = rng.uniform(0.0, 1.0, 6)
        self._sway = rng.uniform(0.0, m - 1.0) if rng.random() < 0.6 else 0.0
        sigma = rng.uniform(1.2, 6.0)
        self._noise = _unit_noise(height, width) * np.float32(sigma)

    # ------------------------------------------------------------------------------- layout

    def _plan_street(self, rng: np.random.Generator) -> None:
        lanes = int(rng.choice([2, 2, 3, 4, 4]))
        lw = rng.uniform(3.0, 3.6)
        park_l, park_r = rng.random() < 0.4, rng.random() < 0.5
        pw = 2.3
        width = lanes * lw + pw * (park_l + park_r)
        swl, swr = rng.uniform(2.0, 6.0, 2)
        cam = rng.uniform(-0.5, width + 0.5)
        self._xl, self._xr = -cam, width - cam
        self._swl, self._swr = swl, swr
        self._lw, self._lanes = lw, lanes
        self._lane0 = self._xl + pw * park_l
        self._parking = [
            x for x, on in ((self._xl + pw / 2, park_l), (self._xr - pw / 2, park_r)) if on
        ]
        self._oncoming = 0 if rng.random() < 0.25 else lanes // 2
        self._zi = rng.uniform(14.0, 34.0) if rng.random() < 0.5 else None
        self._wc = rng.uniform(9.0, 15.0)
        crossings = []
        if self._zi is not None:
            crossings.append(self._zi - self._wc / 2 - 3.8)
        elif rng.random() < 0.35:
            crossings.append(rng.uniform(8.0, 25.0))
        self._crosswalks = crossings

    def _crossing(self, z: float, pad: float = 0.0) -> bool:
        return self._zi is not None and abs(z - self._zi) < self._wc / 2 + pad

    def _segments(self, rng: np.random.Generator) -> list[_Segment]:
        """The facade plane of one side: buildings, parks and gaps from the camera to the
        skyline."""
        out: list[_Segment] = []
        park_side = rng.random() < 0.08
        z = 0.0
        while z < self._zfar:
            end = z + rng.uniform(8.0, 34.0)
            kind = int(rng.choice([_HOUSE, _PARK, _OPEN], p=[0.75, 0.12, 0.13]))
            if park_side:
                kind = _PARK
            if kind == _OPEN:
                end = z + rng.uniform(3.0, 12.0)
            if self._zi is not None:
                g0, g1 = self._zi - self._wc / 2, self._zi + self._wc / 2
                if g0 <= z < g1:
                    kind, end = _OPEN, g1
                elif z < g0 < end:
                    end = g0
            base = _FACADE_COLOURS[int(rng.integers(len(_FACADE_COLOURS)))]
            colour = (
                _hsv(rng.uniform(-0.2, 0.45), rng.uniform(0.15, 0.4), rng.uniform(0.7, 0.92))
                if rng.random() < 0.2
                else _vary(rng, base, 0.2)
            )
            if kind == _PARK:
                colour = _hsv(rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.55))
            fh = rng.uniform(2.9, 3.6)
            gf = rng.uniform(3.4, 5.0)
            floors = int(rng.integers(1, 12))
            out.append(
                _Segment(
                    start=z,
                    end=end,
                    kind=kind,
                    height=gf + floors * fh + rng.uniform(0.3, 1.2)
                    if kind == _HOUSE
                    else rng.uniform(3.0, 11.0),
                    colour=colour,
                    glass=_vary(
                        rng, (rng.uniform(35, 80), rng.uniform(45, 90), rng.uniform(55, 105)), 0.2
                    ),
                    awning=_hsv(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.8)),
                    window_step=rng.uniform(1.6, 3.4),
                    window_width=rng.uniform(0.3, 0.7),
                    window_height=rng.uniform(0.35, 0.65),
                    floor_height=fh,
                    ground_floor=gf,
                    shop=bool(rng.random() < 0.6),
                    lit=rng.uniform(0.0, 0.25),
                )
            )
            z = end
        return out

    def _plan_movers(self, rng: np.random.Generator) -> list[_Mover]:
        movers = []
        zmax = min(self._zfar * 0.8, 90.0)

        def vehicle(kind: str, view: str, flip: bool = False) -> Callable[[int], _Sprite]:
            sub = int(rng.integers(1 << 62))
            return lambda _: _vehicle(np.random.default_rng(sub), kind, view, flip)

        def person(view: str, flip: bool = False) -> Callable[[int], _Sprite]:
            sub = int(rng.integers(1 << 62))
            return lambda phase: _person(np.random.default_rng(sub), view, phase, flip)

        def kind() -> str:
            return _VEHICLE_KINDS[int(rng.integers(len(_VEHICLE_KINDS)))]

        for k in range(self._lanes):
            oncoming = k < self._oncoming
            speed = rng.uniform(3.0, 13.0) * (-1.0 if oncoming else 1.0)
            n = int(rng.integers(1, 4))
            for i in range(n):
                z0 = 2.5 + (i + rng.uniform(0.0, 0.7)) * (zmax - 2.5) / n
                make = vehicle(kind(), "front" if oncoming else "rear")
                x = self._lane0 + (k + 0.5) * self._lw + rng.uniform(-0.3, 0.3)
                movers.append(_Mover(make, 1, _VEHICLE, (x, z0), 0.0, speed, (2.5, zmax)))
        for x in self._parking:
            for _ in range(int(rng.integers(0, 5))):
                make = vehicle(str(rng.choice(["car", "car", "suv", "van"])), "rear")
                z0 = rng.uniform(3.0, 60.0)
                movers.append(_Mover(make, 1, _VEHICLE, (x, z0), 0.0, 0.0, (1.0, zmax)))
        if self._zi is not None:
            for side in (-1.0, 1.0):
                speed = side * rng.uniform(4.0, 12.0)
                z = self._zi + side * self._wc / 4
                for _ in range(int(rng.integers(0, 3))):
                    make = vehicle(kind(), "side", flip=side < 0)
                    xz = (rng.uniform(-80.0, 80.0), z)
                    movers.append(_Mover(make, 1, _VEHICLE, xz, speed, 0.0, (-80.0, 80.0)))
        for _ in range(int(rng.integers(3, 11))):
            right = rng.random() < 0.5
            x = (
                rng.uniform(self._xr + 0.7, self._xr + self._swr - 0.4)
                if right
                else rng.uniform(self._xl - self._swl + 0.4, self._xl - 0.7)
            )
            speed = rng.uniform(0.8, 1.7) * rng.choice([-1.0, 1.0])
            if rng.random() < 0.15:
                speed = 0.0
            away = speed > 0 or (speed == 0 and rng.random() < 0.5)
            make = person("back" if away else "front")
            phases = _WALK_PHASES if speed else 1
            xz = (x, rng.uniform(1.0, 30.0))
            movers.append(_Mover(make, phases, _PERSON, xz, 0.0, speed, (1.0, 30.0)))
        for zc in self._crosswalks:
            for _ in range(int(rng.integers(0, 4))):
                speed = rng.uniform(0.8, 1.6) * rng.choice([-1.0, 1.0])
                lo, hi = self._xl - self._swl - 4.0, self._xr + self._swr + 4.0
                xz = (rng.uniform(lo, hi), zc + rng.uniform(0.4, 2.6))
                make = person("side", flip=speed < 0)
                movers.append(_Mover(make, _WALK_PHASES, _PERSON, xz, speed, 0.0, (lo, hi)))
        return movers

    # ------------------------------------------------------------------------- static layer

    def _draw_static(self, rng: np.random.Generator) -> None:
        ch, cw, s = self._ch, self._cw, self._s
        self._rgb = np.zeros((ch, cw, 3), np.float32)
        self._lab = np.full((ch, cw), _SKY, np.uint8)
        self._depth = np.full((ch, cw), np.inf, np.float32)
        self._tex = _noise(rng, ch, cw, 9.0 * s, 9.0 * s)  # medium grain for every surface
        fine = _noise(rng, ch, cw, 2.2 * s, 2.2 * s)
        self._leaf = np.where(fine < 0.22, 0.35, 0.55 + 0.55 * fine) * (0.7 + 0.6 * self._tex)
        self._draw_sky(rng)
        self._draw_ground(rng)
        self._draw_skyline(rng)
        self._draw_facades(rng)
        self._draw_props(rng)
        # Haze by distance, towards the horizon's colour, then a vignette.
        fog = 1.0 - np.exp(-np.minimum(self._depth, 1e4) / rng.uniform(500.0, 3000.0))
        fog = np.where(np.isfinite(self._depth), fog, 0.0).astype(np.float32)
        self._fog = self._horizon
        self._rgb += fog[..., None] * (self._horizon - self._rgb)
        yy, xx = np.ogrid[:ch, :cw]
        r2 = ((xx - cw / 2) / (cw / 2)) ** 2 + ((yy - ch / 2) / (cw / 2)) ** 2
        self._rgb *= (1.0 - rng.uniform(0.0, 0.3) * r2)[..., None]
        self._rgb0 = np.clip(self._rgb, 0, 255).astype(np.uint8)
        del self._rgb, self._tex, self._leaf

    def _draw_sky(self, rng: np.random.Generator) -> None:
        weather = rng.choice(["clear", "clear", "cloudy", "overcast", "dusk"])
        if weather == "overcast":
            zenith = _vary(rng, (150, 158, 170), 0.2)
            horizon = _vary(rng, (200, 204, 210), 0.1)
            cover, cloud = 0.9, _vary(rng, (175, 178, 185), 0.15)
        elif weather == "dusk":
            zenith = _vary(rng, (70, 95, 160), 0.2)
            horizon = _vary(rng, (235, 170, 120), 0.15)
            cover, cloud = rng.uniform(0.1, 0.5), _vary(rng, (200, 150, 140), 0.2)
        else:
            zenith = _hsv(rng.uniform(0.56, 0.62), rng.uniform(0.5, 0.75), rng.uniform(0.7, 0.92))
            horizon = _hsv(rng.uniform(0.55, 0.6), rng.uniform(0.1, 0.3), rng.uniform(0.86, 0.97))
            cover = rng.uniform(0.0, 0.35) if weather == "clear" else rng.uniform(0.35, 0.7)
            cloud = _vary(rng, (240, 240, 242), 0.08)
        self._horizon = horizon
        rows = np.arange(self._ch, dtype=np.float32)[:, None]
        t = np.clip((self._yh - rows) / max(self._yh, 1.0), 0, 1) ** 0.6
        sky = horizon + t[..., None] * (zenith - horizon)
        half = _fractal(rng, self._ch // 2 + 1, self._cw // 2 + 1, 55 * self._s, 5, stretch=2.5)
        n = np.asarray(
            Image.fromarray(half).resize((self._cw, self._ch), Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        thr = 0.62 - 0.22 * cover
        a = np.clip((n - thr) / 0.16, 0, 1) * min(1.0, 0.4 + cover)
        shade = (0.78 + 0.4 * (n - thr))[..., None]
        self._rgb[:] = sky + a[..., None] * (cloud * shade - sky)

    def _ground_xz(self, r0: int) -> tuple[_F32, _F32]:
        """World x (rows × columns) and z (rows × 1) of the ground seen below row ``r0``."""
        rows = np.arange(r0, self._ch, dtype=np.float32)[:, None]
        z = (self._f * self._hc / np.maximum(rows - self._yh, 0.3)).astype(np.float32)
        cols = np.arange(self._cw, dtype=np.float32)[None, :]
        return ((cols - self._vx) * z / self._f).astype(np.float32), z

    def _draw_ground(self, rng: np.random.Generator) -> None:
        r0 = math.floor(self._yh) + 1
        x, z = self._ground_xz(r0)
        xl, xr = self._xl, self._xr
        tex = self._tex[r0:]
        grain = rng.random(x.shape, dtype=np.float32)
        low = _noise(rng, x.shape[0], x.shape[1], 60 * self._s, 60 * self._s)
        cross = np.zeros(z.shape, np.bool_)
        if self._zi is not None:
            cross = np.abs(z - self._zi) <= self._wc / 2
        road = ((x >= xl) & (x <= xr)) | cross
        side = (((x >= xl - self._swl) & (x < xl)) | ((x > xr) & (x <= xr + self._swr))) & ~cross
        # Surfaces: 0 lot, 1 pavement, 2 asphalt, 3 curb, 4 white paint, 5 yellow paint.
        palette = np.stack(
            [
                _vary(rng, (125, 115, 100), 0.3),
                _vary(rng, _PAVEMENT_COLOURS[int(rng.integers(len(_PAVEMENT_COLOURS)))], 0.15),
                _vary(rng, (rng.uniform(55, 100),) * 3, 0.1),
                np.full(3, 190.0, np.float32),
                np.full(3, 228.0, np.float32),
                np.asarray((222, 184, 52), np.float32),
            ]
        )
        surface = (2 * road + side).astype(np.uint8)
        shade = (0.86 + 0.22 * tex + 0.12 * (grain - 0.5)) * np.where(low > 0.66, 0.86, 1.0)
        # Paving joints, only where a tile is wide enough on screen to show them.
        ts = rng.uniform(0.3, 1.0)
        joints = ((x / ts) % 1.0 < 0.06) | (((z / ts) % 1.0 < 0.06) & (self._f / z * ts > 7))
        shade[side & joints & (self._f / z * ts > 7)] *= 0.8
        surface[side & ((np.abs(x - xl) < 0.22) | (np.abs(x - xr) < 0.22))] = 3
        # Markings: lane lines (dashed), edges, a centre line, crosswalks.
        paint = np.zeros(x.shape, np.bool_)
        yellow = np.zeros(x.shape, np.bool_)
        period, phase = rng.uniform(8.0, 13.0), rng.uniform(0.0, 10.0)
        dashed = ((z + phase) / period) % 1.0 < 0.45
        lane_r = self._lane0 + self._lanes * self._lw
        for k in range(1, self._lanes):
            xb = self._lane0 + k * self._lw
            if k == self._oncoming:
                yellow |= np.abs(np.abs(x - xb) - 0.14) < 0.06
            else:
                paint |= (np.abs(x - xb) < 0.075) & dashed
        for xe in (self._lane0 + 0.2, lane_r - 0.2):
            paint |= np.abs(x - xe) < 0.07
        for zc in self._crosswalks:
            band = (z >= zc) & (z < zc + 3.0)
            paint |= band & (((x - xl) / 1.1) % 1.0 < 0.5) & (x > xl) & (x < xr)
        surface[paint & ~cross] = 4
        surface[yellow & ~cross] = 5
        shade = np.where(surface >= 4, 0.7 + 0.35 * low, shade)
        self._rgb[r0:] = palette[surface] * shade[..., None]
        self._lab[r0:] = np.where(road, _ROAD, _BACKGROUND)
        self._depth[r0:] = z

    def _draw_skyline(self, rng: np.random.Generator) -> None:
        if rng.random() < 0.15:
            return
        f, zf, yh, hc = self._f, self._zfar, self._yh, self._hc
        bottom = min(self._ch, math.ceil(yh + f * hc / zf) + 1)
        c = 0
        rows = np.arange(self._ch)[:, None]
        green = _hsv(rng.uniform(0.2, 0.33), 0.5, 0.4)
        while c < self._cw:
            wpx = int(rng.uniform(15, 90) * self._s) + 1
            cols = np.arange(c, min(c + wpx, self._cw))[None, :]
            if rng.random() < 0.75:
                top = yh - f * (rng.uniform(8.0, 60.0) - hc) / zf
                colour = _vary(rng, _FACADE_COLOURS[int(rng.integers(len(_FACADE_COLOURS)))], 0.3)
                pattern = np.where((rows % 4 == 1) & (cols % 3 == 1), 0.8, 1.0)
                label = _BUILDING
            else:
                top = yh - f * (rng.uniform(5.0, 15.0) - hc) / zf
                top = top - 4 * self._s * np.abs(np.sin(cols * 0.35 + rng.uniform(0, 6)))
                colour, pattern, label = green, self._leaf[:, c : c + cols.shape[1]], _VEGETATION
            region = self._rgb[:, c : c + cols.shape[1]]
            mask = np.broadcast_to((rows >= top) & (rows < bottom), region.shape[:2])
            shaded = np.broadcast_to(colour * np.asarray(pattern)[..., None], region.shape)
            region[mask] = shaded[mask]
            self._lab[:, c : c + cols.shape[1]][mask] = label
            self._depth[:, c : c + cols.shape[1]][mask] = zf
            c += cols.shape[1]

    def _draw_facades(self, rng: np.random.Generator) -> None:
        f, yh, hc = self._f, self._yh, self._hc
        planes = (self._xl - self._swl, self._xr + self._swr)
        sides = [self._segments(rng) for _ in planes]
        dx = np.arange(self._cw, dtype=np.float32) - np.float32(self._vx)
        right = dx > 0
        xb = np.where(right, planes[1], planes[0])
        with np.errstate(divide="ignore"):
            zc = np.where(np.abs(dx) > 0.5, f * xb / dx, np.inf).astype(np.float32)
        zc[(zc <= 0.3) | (zc >= self._zfar)] = np.inf
        valid = np.isfinite(zc)
        segs = sides[0] + sides[1]
        starts = [np.asarray([g.start for g in side]) for side in sides]
        idx = np.zeros(self._cw, np.int64)
        zs = np.where(valid, zc, 0.0)
        for k, mask in enumerate((~right, right)):
            off = 0 if k == 0 else len(sides[0])
            idx[mask] = np.searchsorted(starts[k], zs[mask], side="right") - 1 + off

        def col(attr: Callable[[_Segment], float]) -> _F32:
            return np.asarray([attr(g) for g in segs], dtype=np.float32)[idx]

        kind = col(lambda g: g.kind)
        valid &= kind != _OPEN
        u = zs - col(lambda g: g.start)
        height = col(lambda g: g.height)
        # Parks: a bumpy canopy line. Buildings: a flat roof.
        bumps = 0.9 * np.sin(u * 0.9 + col(lambda g: g.start)) + 0.5 * np.sin(u * 2.3)
        height = np.where(kind == _PARK, height + bumps, height)
        with np.errstate(invalid="ignore", divide="ignore"):
            top = yh - f * (height - hc) / zs
            bottom = yh + f * hc / zs
        rows = np.arange(self._ch, dtype=np.float32)[:, None]
        m = valid[None, :] & (rows >= top[None, :]) & (rows < bottom[None, :])
        # Per column: a colour per material (wall, window, lit window, shop window, awning). Far
        # away windows are smaller than a pixel, so the materials fade to the wall's mean colour.
        step, gf, fh = (
            col(lambda g: g.window_step),
            col(lambda g: g.ground_floor),
            col(lambda g: g.floor_height),
        )
        wall = np.stack([g.colour for g in segs])[idx]
        glass = np.stack([g.glass for g in segs])[idx]
        table = np.stack(
            [wall, glass, np.broadcast_to(_LIT_WINDOW, wall.shape), glass * 1.3,
             np.stack([g.awning for g in segs])[idx]],
            axis=1,
        )  # fmt: skip
        with np.errstate(invalid="ignore", divide="ignore"):
            px = np.minimum(step * f * np.abs(xb) / (zs * zs), fh * f / zs)
        detail = np.nan_to_num(np.clip((px - 2.0) / 4.0, 0, 1))[:, None, None]
        table = detail * table + (1 - detail) * (0.75 * wall + 0.25 * glass)[:, None, :]
        iu = np.floor(u / step)
        win_u = np.abs(u / step - iu - 0.5) < col(lambda g: g.window_width) / 2
        su = (u / 4.5) % 1.0
        shop = col(lambda g: g.shop) > 0
        # Per pixel of the facades (row pr, column c): material and shade.
        pr, c = np.nonzero(m)
        z = zs[c]
        vy = (hc - (pr - yh) * z / f).astype(np.float32)  # height above the ground
        h_p, gf_p = height[c], gf[c]
        fl = (vy - gf_p) / fh[c]
        iv = np.floor(fl)
        fv = fl - iv
        upper = (vy >= gf_p) & (vy < h_p - 0.9)
        window = win_u[c] & upper & (fv > 0.3) & (fv < 0.3 + col(lambda g: g.window_height)[c])
        r = _hash01(
            iu[c].astype(np.int64), iv.astype(np.int64), idx[c] + 1000 * (self.seed % 100000)
        )
        gains = rng.uniform(0.75, 1.1, 2).astype(np.float32)
        shade = np.where(right[c], gains[1], gains[0]) * (0.84 + 0.3 * self._tex[pr, c])
        shade[upper & (fv < 0.05)] *= 0.82
        shade[vy > h_p - 0.45] *= 0.7
        material = window.astype(np.uint8)
        material[window & (r < col(lambda g: g.lit)[c])] = 2
        shop_p = shop[c] & (vy < gf_p - 0.3)
        material[shop_p & (su[c] > 0.08) & (su[c] < 0.85) & (vy > 0.35) & (vy < gf_p - 1.0)] = 3
        material[shop_p & (vy > gf_p - 0.9) & (su[c] < 0.9)] = 4
        shade = np.where(material == 1, 0.6 + 0.9 * r, shade)
        is_park = kind[c] == _PARK
        leaf = self._leaf[pr, c] * np.clip(0.6 + 0.5 * vy / 4.0, 0.5, 1.1)
        shade = np.where(is_park, leaf, shade)
        material[is_park] = 0
        self._rgb[pr, c] = table[c, material] * shade[:, None]
        self._lab[pr, c] = np.where(is_park, _VEGETATION, _BUILDING)
        self._depth[pr, c] = z

    # ------------------------------------------------------------------------------- props

    def _box(
        self, x: float, z: float, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[int, int, int, int]:
        """Screen box (rows r0:r1, cols c0:c1) of a rectangle in metres at ``(x, z)``, clipped."""
        ppm = self._f / z
        sx = self._vx + self._f * x / z
        yb = self._yh + self._f * self._hc / z
        c0 = round(sx + x0 * ppm)
        c1 = max(round(sx + x1 * ppm), c0 + 1)
        r0 = round(yb - y1 * ppm)
        r1 = max(round(yb - y0 * ppm), r0 + 1)
        return max(r0, 0), min(r1, self._ch), max(c0, 0), min(c1, self._cw)

    def _rect(
        self,
        x: float,
        z: float,
        x0: float,
        x1: float,
        y0: float,
        y1: float,
        colour: _RGB,
        label: int,
    ) -> None:
        r0, r1, c0, c1 = self._box(x, z, x0, x1, y0, y1)
        if r0 >= r1 or c0 >= c1:
            return
        m = self._depth[r0:r1, c0:c1] > z
        shade = (0.88 + 0.24 * self._tex[r0:r1, c0:c1])[..., None] * colour
        self._rgb[r0:r1, c0:c1][m] = shade[m]
        self._lab[r0:r1, c0:c1][m] = label
        self._depth[r0:r1, c0:c1][m] = z

    def _blob(self, x: float, z: float, cy: float, rx: float, ry: float, colour: _RGB) -> None:
        """A leafy blob (crown or bush) centred ``cy`` metres above the ground at ``(x, z)``."""
        r0, r1, c0, c1 = self._box(x, z, -rx, rx, cy - ry, cy + ry)
        if r0 >= r1 or c0 >= c1:
            return
        ppm = self._f / z
        sx, yc = self._vx + self._f * x / z, self._yh + self._f * self._hc / z - cy * ppm
        yy, xx = np.ogrid[r0:r1, c0:c1]
        dx, dy = (xx - sx) / (rx * ppm), (yy - yc) / (ry * ppm)
        # A lobed outline (phases from the position), a little ragged at the pixel scale.
        a = np.arctan2(dy, dx)
        edge = 0.9 + 0.07 * np.sin(5 * a + 3 * x + z) + 0.04 * np.sin(11 * a + 2 * z)
        edge = edge + 0.08 * (self._tex[r0:r1, c0:c1] - 0.5)
        m = (dx * dx + dy * dy < edge * edge) & (self._depth[r0:r1, c0:c1] > z)
        shade = self._leaf[r0:r1, c0:c1] * (
            1.15 - 0.45 * np.clip((yy - yc) / (ry * ppm) + 0.5, 0, 1)
        )
        self._rgb[r0:r1, c0:c1][m] = (shade[..., None] * colour)[m]
        self._lab[r0:r1, c0:c1][m] = _VEGETATION
        self._depth[r0:r1, c0:c1][m] = z

    def _draw_props(self, rng: np.random.Generator) -> None:
        """Street trees, hedges, lamp posts, signs, furniture: drawn far to near."""
        ops: list[tuple[float, Callable[..., None], tuple[object, ...]]] = []

        def rect(
            x: float, z: float, box: tuple[float, float, float, float], c: _RGB, label: int
        ) -> None:
            ops.append((z, self._rect, (x, z, *box, c, label)))

        def blob(x: float, z: float, cy: float, rx: float, ry: float, c: _RGB) -> None:
            ops.append((z, self._blob, (x, z, cy, rx, ry, c)))

        def green() -> _RGB:
            return _hsv(rng.uniform(0.19, 0.34), rng.uniform(0.45, 0.85), rng.uniform(0.3, 0.6))

        furniture = ((60, 70, 60), (40, 40, 42), (120, 120, 118), (130, 90, 60), (170, 160, 60))
        signs = ((200, 30, 30), (30, 70, 170), (230, 230, 230), (230, 190, 30), (30, 120, 60))
        for sgn, curb, wall in (
            (-1.0, self._xl, self._xl - self._swl),
            (1.0, self._xr, self._xr + self._swr),
        ):
            if rng.random() < 0.7:  # street trees
                z, step, leaves = rng.uniform(2.0, 9.0), rng.uniform(7.0, 16.0), green()
                bark = _vary(rng, (85, 65, 50), 0.3)
                while z < min(self._zfar * 0.6, 90.0):
                    if not self._crossing(z, 2.0) and rng.random() < 0.85:
                        x = curb + sgn * rng.uniform(0.7, 1.3)
                        th, r, tw = (
                            rng.uniform(1.8, 3.2),
                            rng.uniform(1.3, 3.0),
                            rng.uniform(0.22, 0.4),
                        )
                        rect(x, z, (-tw / 2, tw / 2, 0.0, th + r * 0.6), bark, _VEGETATION)
                        blob(
                            x,
                            z - 0.01,
                            th + r,
                            r,
                            r * rng.uniform(0.9, 1.3),
                            _vary(rng, leaves, 0.15),
                        )
                    z += step * rng.uniform(0.8, 1.2)
            if rng.random() < 0.3:  # a hedge along the wall
                leaves, h = green(), rng.uniform(0.7, 1.5)
                z = rng.uniform(2.0, 20.0)
                end = z + rng.uniform(8.0, 40.0)
                for zh in np.arange(z, end, 0.9):
                    if not self._crossing(float(zh), 1.0):
                        blob(wall - sgn * 0.6, float(zh), h * 0.6, 0.7, h * 0.65, leaves)
            pole = _vary(rng, _POLE_COLOURS[int(rng.integers(len(_POLE_COLOURS)))], 0.2)
            lamp = _vary(rng, (200, 200, 190), 0.1)
            z, step, ph = rng.uniform(3.0, 15.0), rng.uniform(14.0, 35.0), rng.uniform(5.0, 9.0)
            arm = (-1.6, 0.0) if sgn > 0 else (0.0, 1.6)
            head = -1.6 if sgn > 0 else 1.2
            while z < 60.0:  # lamp posts
                if not self._crossing(z, 1.0):
                    x = curb + sgn * 0.4
                    rect(x, z, (-0.09, 0.09, 0.0, ph), pole, _BACKGROUND)
                    rect(x, z, (*arm, ph - 0.15, ph), pole, _BACKGROUND)
                    rect(x, z - 0.01, (head, head + 0.4, ph - 0.3, ph - 0.05), lamp, _BACKGROUND)
                z += step
            for _ in range(int(rng.integers(0, 4))):  # signs on posts
                z, x = rng.uniform(4.0, 50.0), curb + sgn * 0.5
                face = _vary(rng, signs[int(rng.integers(len(signs)))], 0.15)
                rect(x, z, (-0.04, 0.04, 0.0, 2.6), pole, _BACKGROUND)
                rect(x, z - 0.01, (-0.35, 0.35, 2.0, 2.7), face, _BACKGROUND)
            for _ in range(int(rng.integers(0, 6))):  # bins, boxes, benches, bollards
                z, x = rng.uniform(3.0, 50.0), rng.uniform(min(curb, wall), max(curb, wall))
                w, h = (
                    (rng.uniform(0.4, 1.8), rng.uniform(0.5, 1.4))
                    if rng.random() < 0.7
                    else (0.18, 0.9)
                )
                c = _vary(rng, furniture[int(rng.integers(len(furniture)))], 0.2)
                rect(x, z, (-w / 2, w / 2, 0.0, h), c, _BACKGROUND)
            if self._zi is not None:  # traffic lights at the corner
                z, x = self._zi - self._wc / 2 - 1.0, curb + sgn * 0.5
                rect(x, z, (-0.07, 0.07, 0.0, 3.6), pole, _BACKGROUND)
                rect(
                    x, z - 0.01, (-0.17, 0.17, 2.7, 3.6), np.full(3, 31.0, np.float32), _BACKGROUND
                )
        for _, fn, args in sorted(ops, key=lambda item: -item[0]):
            fn(*args)

    # ------------------------------------------------------------------------------ frames

    def render(self, t: float) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """RGB uint8 (H, W, 3) C-contiguous and the label map uint8 (H, W) with ids indexing
        CLASS_NAMES, at time t seconds."""
        h, w, m = self.height, self.width, self._m
        tau = 2 * math.pi * t
        wv = self._light_waves
        oy = m + round(self._sway * math.sin(tau / (3.0 + 4 * wv[0]) + 6 * wv[1]))
        ox = m + round(0.6 * self._sway * math.sin(tau / (2.3 + 3 * wv[2]) + 6 * wv[3]))
        rgb = self._rgb0[oy : oy + h, ox : ox + w].copy()
        lab = self._lab[oy : oy + h, ox : ox + w].copy()
        depth = self._depth[oy : oy + h, ox : ox + w]
        placed = sorted(((mv.at(t), mv) for mv in self._movers), key=lambda p: -p[0][1])
        for (x, z, phase), mv in placed:
            self._blit(rgb, lab, depth, mv, phase, x, z, ox, oy)
        # Exposure and colour temperature drift with t; then sensor noise.
        k = self._temp + 0.3 * math.sin(tau / (40 + 40 * wv[4]) + 6 * wv[5])
        g = self._exposure * (
            1
            + 0.07 * math.sin(tau / (11 + 9 * wv[0]) + 6 * wv[2])
            + 0.03 * math.sin(tau / 3.7 + wv[3])
        )
        gain = np.asarray((g * (1 + 0.07 * k), g, g * (1 - 0.09 * k)), np.float32)
        rs = np.random.default_rng((self.seed, round(t * 1000.0) % (1 << 32)))
        ny, nx = int(rs.integers(0, 17)), int(rs.integers(0, 17))
        out = rgb.astype(np.float32)
        out *= gain
        out += self._noise[ny : ny + h, nx : nx + w]
        np.clip(out, 0.0, 255.0, out=out)
        return out.astype(np.uint8), lab

    def _blit(
        self,
        rgb: _U8,
        lab: _U8,
        depth: _F32,
        mover: _Mover,
        phase: int,
        x: float,
        z: float,
        ox: int,
        oy: int,
    ) -> None:
        """Draws ``mover`` (at ``x, z``) into the frame, behind what the depth buffer has nearer."""
        f = self._f
        if z < 0.5 or abs(self._f * x / z) > 3 * self.width:
            return
        sprite = mover.sprite(phase)
        hpx, wpx = f * sprite.height_m / z, f * sprite.width_m / z
        if hpx < 1.0 or wpx < 1.0:
            return
        sx = self._vx - ox + f * x / z
        yb = self._yh - oy + f * self._hc / z
        x0, y0 = sx - wpx / 2, yb - hpx
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x0 + wpx), self.width)
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(yb), self.height)
        if c0 >= c1 or r0 >= r1:
            return
        src_rgb, src_a = sprite.level(hpx)
        lh, lw = src_a.shape
        rows = np.minimum(((np.arange(r0, r1) + 0.5 - y0) * (lh / hpx)).astype(np.intp), lh - 1)
        cols = np.minimum(((np.arange(c0, c1) + 0.5 - x0) * (lw / wpx)).astype(np.intp), lw - 1)
        a = src_a.take(rows, axis=0).take(cols, axis=1)
        vis = (depth[r0:r1, c0:c1] > z * 0.98) & (a > 0)
        if not vis.any():
            return
        dst = rgb[r0:r1, c0:c1]
        # Contact shadow: darken the ground just below the object.
        half = wpx * (0.45 if mover.label == _VEHICLE else 0.2)
        sc0, sc1 = max(round(sx - half), 0), min(round(sx + half) + 1, self.width)
        sh0, sh1 = max(round(yb - 0.05 * hpx), 0), min(round(yb + 0.015 * hpx) + 1, self.height)
        if sh0 < sh1 and sc0 < sc1:
            sub = rgb[sh0:sh1, sc0:sc1]
            sub[...] = (sub * np.float32(0.65)).astype(np.uint8)
        src = src_rgb.take(rows, axis=0).take(cols, axis=1)
        fog = 1.0 - math.exp(-z / 600.0)
        if fog > 0.02:  # only far (so small) objects: haze in float
            hazed = src + np.float32(fog) * (self._fog - src)
            src = hazed.astype(np.uint8)
        # Opaque pixels are copied; only the antialiased rim is blended.
        solid = vis & (a == 255)
        np.copyto(dst, src, where=solid[..., None])
        rim = vis & (a < 255)
        if rim.any():
            w = a[rim].astype(np.float32)[:, None] * np.float32(1 / 255)
            d = dst[rim].astype(np.float32)
            dst[rim] = (d + w * (src[rim] - d)).astype(np.uint8)
        lab[r0:r1, c0:c1][vis & (a >= 128)] = mover.label


_NOISE_CACHE: dict[tuple[int, int], _F32] = {}


def _unit_noise(h: int, w: int) -> _F32:
    """Unit Gaussian sensor noise, a little larger than the frame (frames pick an offset)."""
    if (h, w) not in _NOISE_CACHE:
        rng = np.random.default_rng(0x5E750)
        _NOISE_CACHE[(h, w)] = rng.standard_normal((h + 16, w + 16, 3), dtype=np.float32)
    return _NOISE_CACHE[(h, w)]
