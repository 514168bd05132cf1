"""Decoding in child processes: a crash or hang of a decoder costs a restart, not the service.

:class:`IsolatedSource` wraps any thread source (PyAV, synthetic): the real source runs in a child
process started by a forkserver, and its frames come back through a pool of shared-memory slots
(:mod:`.slots`); only slot numbers and small metadata cross the pipe (:mod:`.protocol`). The
child side is :mod:`.child`, the parent side :mod:`.source`, and :mod:`.launch` starts
children.

Copies: in-process, PyAV converts a decoded picture to RGB once, into an array the engine uses
as it is. Here the child does the same conversion and copies the RGB array into a slot (one
``memcpy``: PyAV cannot convert into a buffer it did not allocate); the parent gives the engine a
view on the slot, with no copy. ``scripts/bench_isolated.py`` measures what that costs.
"""

from stream_pipeline.sources.isolated.launch import decoder_context, start_decoder_server
from stream_pipeline.sources.isolated.source import IsolatedSource, describe_exit, isolate

__all__ = [
    "IsolatedSource",
    "decoder_context",
    "describe_exit",
    "isolate",
    "start_decoder_server",
]
