"""Parts of a job (no Ray): one source each, per-source file paths, versions of assignments."""

from __future__ import annotations

from stream_pipeline.cluster.parts import assignment_version, part_id, parts_of
from stream_pipeline.cluster.placement import capacity, source_rates
from stream_pipeline.jobs.spec import JobSpec


def _spec() -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "yard",
            "model": "default",
            "sources": [
                {"id": "gate", "url": "synthetic://street?frames=5"},
                {"id": "dock", "url": "synthetic://street?frames=5"},
            ],
            "sinks": [
                {"type": "jsonl", "path": "out/yard.jsonl"},
                {"type": "jsonl", "path": "gate-only.jsonl", "source_id": "gate"},
                {"type": "video", "path": "clips"},
                {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
            ],
        }
    )


def test_a_part_is_one_source_with_the_sinks_that_take_it() -> None:
    gate, dock = parts_of("j1", _spec())
    assert gate.id == part_id("j1", "gate") == "j1.gate"
    assert [s.id for s in gate.spec.sources] == ["gate"]
    assert gate.sink_index == (0, 1, 2, 3)
    assert dock.sink_index == (0, 2, 3)  # the sink limited to gate is not dock's
    # A file sink shared by the job's sources writes one file per source; one limited to a
    # source keeps its path; a remote sink is unchanged.
    paths = [getattr(s, "path", None) for s in gate.spec.sinks]
    assert paths == ["out/yard.gate.jsonl", "gate-only.jsonl", "clips.gate", None]
    assert [getattr(s, "path", None) for s in dock.spec.sinks] == [
        "out/yard.dock.jsonl", "clips.dock", None,
    ]  # fmt: skip
    assert JobSpec.model_validate_json(dock.wire) == dock.spec


def test_assignment_versions_are_equal_iff_the_parts_are() -> None:
    gate, dock = parts_of("j1", _spec())
    one = {gate.id: gate.wire, dock.id: dock.wire}
    same = {dock.id: dock.wire, gate.id: gate.wire}
    assert assignment_version(one) == assignment_version(same)
    assert assignment_version(one) != assignment_version({gate.id: gate.wire})
    assert assignment_version({}) != assignment_version({gate.id: gate.wire})


def test_capacity_comes_from_the_measured_cost_and_the_cap() -> None:
    cost = {"frames": 1000, "seconds": 10.0}  # 10 ms of worker time a frame
    # 0.8 of the worker at 10 ms a frame: 80 frames a second, 16 sources at 5 fps, 8 at 10.
    assert capacity(cost, [5.0, 5.0], 0.8, None) == 16
    assert capacity(cost, [5.0, 15.0], 0.8, None) == 8
    assert capacity(cost, [5.0, 5.0], 0.8, 4) == 4  # the smaller of the two
    assert capacity(cost, [200.0], 0.8, None) == 1  # never below one
    # Not known yet (too few frames, no running source, turned off): only the cap.
    assert capacity({"frames": 10, "seconds": 0.1}, [5.0], 0.8, 6) == 6
    assert capacity(cost, [], 0.8, None) is None
    assert capacity(cost, [5.0], 0.0, None) is None


def test_source_rates_are_those_of_streaming_parts() -> None:
    status = {
        "parts": {
            "j.a": {"sources": [{"state": "streaming", "fps": 5.0}]},
            "j.b": {"sources": [{"state": "starting", "fps": 0.0}]},
            "j.c": {"sources": [{"state": "streaming", "fps": 12.5}]},
        }
    }
    assert sorted(source_rates(status)) == [5.0, 12.5]
