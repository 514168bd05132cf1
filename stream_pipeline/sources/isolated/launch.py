"""Where decoder children come from: a forkserver with the decoding modules preloaded.

A plain fork of the threaded service could copy a lock some other thread holds; ``spawn`` starts
a fresh interpreter for every restart (and Linux's ``PR_SET_PDEATHSIG`` fires when the *thread*
that forked the child ends, which would be a short-lived engine thread). The forkserver is one
single-threaded process, started once, that forks each child with numpy, PyAV and the sources
already imported: a restart takes milliseconds, and the children die with it (it exits when the
service does).

One workaround: a forkserver child imports the parent's ``__main__`` again before it runs its
target, because the forkserver never preloads it (CPython gh-98552, gh-126631; fixed after
3.11). For the service that main is ``stream_pipeline.cli``, which imports onnxruntime: seconds
and tens of MiB per decoder, for nothing, since a decoder's target and arguments all live in
importable modules. :func:`decoder_context` therefore drops the main module from the preparation
data of the processes it names (and of no other).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.spawn
import threading
from typing import Any

__all__ = ["DECODER_NAME", "decoder_context", "start_decoder_server"]

DECODER_NAME = "stream-pipeline-decoder"  # process names start with it: "…:<source id>"
_PRELOAD = [
    "numpy",
    "numpy.random",  # imported on first use by the synthetic scenes, as is PIL
    "PIL.Image",
    "PIL.ImageFile",
    "av",
    "stream_pipeline.sources.isolated.child",
    "stream_pipeline.sources.av_source",
    "stream_pipeline.sources.synthetic",
    "stream_pipeline.scenes",
]
_lock = threading.Lock()
_context: multiprocessing.context.ForkServerContext | None = None


def _without_main(get: Any) -> Any:
    def preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = get(name)
        if name.startswith(DECODER_NAME):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    preparation_data.without_main = True  # type: ignore[attr-defined]
    return preparation_data


def decoder_context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context decoder children start from (see the module docstring)."""
    global _context
    with _lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            get = multiprocessing.spawn.get_preparation_data
            if not getattr(get, "without_main", False):
                multiprocessing.spawn.get_preparation_data = _without_main(get)
            _context = ctx
        return _context


def start_decoder_server() -> None:
    """Start the forkserver now, off the path of the first source (blocking: call it off the
    event loop); otherwise the first decoder starts it."""
    decoder_context()
    multiprocessing.forkserver.ensure_running()
