"""uvicorn's server as `orch serve` runs it: it stops as soon as it is asked.

uvicorn looks for a stop every 0.1 s, and once stopping it waits 0.1 s after asking the open
connections to close, then looks every 0.1 s for them to be gone: ~180 ms of every stop of
an idle server (bench/serve.py), which every test of a real server paid. Here a stop wakes
the loop at once, and the same steps of the stop look every ``STOP_POLL_S``. What a stop
does is uvicorn's: no new connection, idle ones closed, open requests finished within the
graceful timeout (then cancelled), then the app's lifespan ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)

# uvicorn's own period for its housekeeping (the Date header, the stop flag).
TICK_S = 0.1
# How often a stop looks for the open connections and requests to be gone.
STOP_POLL_S = 0.005


class Server(uvicorn.Server):
    """A uvicorn server that calls ``on_exit`` when a signal asks it to stop, then stops."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: asyncio.Event | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)
        self._wake()

    def exit_soon(self) -> None:
        """Stop serving, from any thread: as a signal does, without ``on_exit``."""
        self.should_exit = True
        self._wake()

    def _wake(self) -> None:
        # The loop may be asleep in main_loop: a thread-safe call wakes it (asyncio's way
        # for a signal handler too). Before main_loop runs, should_exit alone is enough:
        # its first look sees it.
        loop, asked = self._loop, self._asked
        if loop is not None and asked is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(asked.set)

    async def main_loop(self) -> None:
        self._asked = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000  # as uvicorn counts: on_tick acts every 10th
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._asked.wait()
            self._asked.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Idle keep-alive connections close now; a busy one after its response.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        state = self.server_state
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:
                    await asyncio.sleep(STOP_POLL_S)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            log.error(
                "cancelling %d open request(s): the graceful shutdown's %s s are over",
                len(state.tasks),
                self.config.timeout_graceful_shutdown,
                extra={"action": "serve"},
            )
            for task in state.tasks:
                task.cancel(msg="the graceful shutdown's time is over")
        if not self.force_exit:
            await self.lifespan.shutdown()
