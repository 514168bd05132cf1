"""The one-pass RLE encoder against pycocotools' own encoder of per-class masks."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from stream_pipeline.model.serialize import rle_encode


def _coco(class_map: np.ndarray, ids: list[int]) -> list[dict[str, object]]:
    out = []
    for cid in ids:
        e = coco_mask.encode(np.asfortranarray((class_map == cid).astype(np.uint8)))
        out.append({"size": [int(s) for s in e["size"]], "counts": e["counts"].decode("ascii")})
    return out


@pytest.mark.parametrize("shape", [(1, 1), (5, 4), (37, 61), (360, 640)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_matches_pycocotools(shape: tuple[int, int], dtype: type) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    noisy: np.ndarray = rng.integers(0, 5, shape).astype(dtype)
    blocky = np.repeat(np.repeat(rng.integers(0, 5, (8, 8)), 64, 0), 64, 1)[: shape[0], : shape[1]]
    for class_map in (noisy, blocky.astype(dtype)):
        ids = [1, 2, 3, 4, 9]  # 9 is absent: one run of zeros
        assert rle_encode(class_map, ids) == _coco(class_map, ids)


def test_corners_and_full_frames() -> None:
    edge = np.zeros((5, 4), np.uint8)
    edge[0, 0], edge[-1, -1] = 1, 2
    assert rle_encode(edge, [1, 2]) == _coco(edge, [1, 2])
    full = np.full((6, 3), 3, np.uint8)
    assert rle_encode(full, [3]) == _coco(full, [3])
    assert coco_mask.decode(
        rle_encode(full, [3])[0] | {"counts": rle_encode(full, [3])[0]["counts"].encode()}
    ).all()
    assert rle_encode(full, []) == []
