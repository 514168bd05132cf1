"""One serialisation per result, shared by the sinks that receive it at the same moment."""

from __future__ import annotations

import json
import threading

import pytest

from stream_pipeline.consumers.files import prediction_json
from stream_pipeline.model import SegmentationModel
from tests.support.results import context_for, real_results

pytestmark = pytest.mark.timeout(30)


def test_sink_threads_share_one_encoding_per_result(tiny_model: SegmentationModel) -> None:
    ctx = context_for(tiny_model)
    results = real_results(tiny_model, range(8))
    got: list[list[bytes]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def sink(i: int) -> None:
        start.wait()
        got[i] = [prediction_json(r, ctx) for r in results]

    threads = [threading.Thread(target=sink, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The same bytes, so the same random detection ids, in every sink's output.
    assert got[0] == got[1] == got[2] == got[3]
    first = json.loads(got[0][0])
    assert first["inference_id"] == results[0].inference_id
    assert prediction_json(results[0], ctx, with_masks=False) != got[0][0]  # its own form
