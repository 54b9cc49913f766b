"""A TCP forwarder for the hosts suite: PostgreSQL and Redis listen on 127.0.0.1 only, so the root network
namespace, which plays the services' host, listens on each host's link with this and forwards to them.

    python -m tests.hosts.forwarder 10.231.1.1:5432=127.0.0.1:5432 10.231.1.1:6379=127.0.0.1:6379 ...

Prints ``ready`` once every address listens. It adds nothing a network would not: when a host's link goes down
its connections stall here exactly as they would at the server, and nothing is closed that its peer did not close.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def handler(target_host: str, target_port: int) -> Handler:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return forward


def address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def main(rules: list[str]) -> None:
    servers = []
    for rule in rules:
        listen, target = rule.split("=", 1)
        host, port = address(listen)
        servers.append(await asyncio.start_server(handler(*address(target)), host, port, reuse_address=True))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
