"""A WHEP viewer in a process of its own (``python -m tests.support.whep_viewer URL STREAM``), so
a test can freeze it with SIGSTOP: a viewer whose network stack stops answering."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from tests.support.webrtc import WhepClient


async def _main(url: str, stream: str) -> None:
    async with aiohttp.ClientSession() as http:
        viewer = WhepClient(http, url)
        try:
            await viewer.watch(stream)
            await viewer.connected()
            print("CONNECTED", flush=True)
            await asyncio.Event().wait()  # until killed
        finally:
            await viewer.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
