"""Running one pipeline in the foreground: signals, the status line, the summary.

Ctrl-C or SIGTERM once: a graceful stop (sources stop, buffered frames are processed, the mp4 is
finalised). A second time: a hard stop (threads are told to stop at once; sinks still close).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import TextIO

from stream_pipeline.engine.status import EngineStatus
from stream_pipeline.pipeline import Pipeline
from stream_pipeline.status import progress_line, summary_text

__all__ = ["run_pipeline", "run_with_loop"]


async def _report(
    pipeline: Pipeline, json_status: bool, quiet: bool, out: TextIO, err: TextIO
) -> None:
    tty = err.isatty()
    interval = 1.0 if (json_status or tty) else 5.0
    while True:
        await asyncio.sleep(interval)
        status = pipeline.status()
        if json_status:
            out.write(json.dumps({"type": "status", **status.to_dict()}) + "\n")
            out.flush()
        elif not quiet:
            line = progress_line(status)
            err.write(("\r\x1b[2K" + line) if tty else line + "\n")
            err.flush()


async def run_pipeline(
    pipeline: Pipeline,
    json_status: bool = False,
    quiet: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> EngineStatus:
    """Run ``pipeline`` to its end with status reporting; returns the final status."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            pipeline.stop()
        elif main is not None:
            main.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
    started = time.monotonic()
    try:
        async with pipeline, asyncio.TaskGroup() as tg:
            reporter = tg.create_task(_report(pipeline, json_status, quiet, out, err))
            try:
                await pipeline.run()
            finally:
                reporter.cancel()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if err.isatty() and not (json_status or quiet):
            err.write("\r\x1b[2K")
    status = pipeline.status()
    wall = round(time.monotonic() - started, 3)
    if json_status:
        record = {"type": "summary", **status.to_dict(), "wall_seconds": wall}
        out.write(json.dumps(record) + "\n")
        out.flush()
    elif not quiet:
        err.write(summary_text(status) + "\n")
        err.flush()
    return status


def run_with_loop(coro_factory: object) -> object:
    """Run a coroutine on uvloop where installed, else asyncio's default loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro_factory())  # type: ignore[operator]
