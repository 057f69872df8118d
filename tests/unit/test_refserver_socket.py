"""The reference server's pre-bound listening socket (``refserver.serve.bind_socket``).

uvicorn serves on it through asyncio, which turns Nagle's algorithm off (``TCP_NODELAY``) only on
connections whose socket says it is TCP. A socket made with protocol 0 passed that on to every
accepted connection, and each small reply then waited for the client's delayed ACK (the demo ran
at a third of its speed). This test serves on the socket the way uvicorn does and reads the
option on the accepted connection.
"""

from __future__ import annotations

import asyncio
import socket

from pool_env.refserver.serve import bind_socket


def test_connections_accepted_on_the_bound_socket_have_nagle_off() -> None:
    async def accepted_nodelay() -> int:
        listener = bind_socket("127.0.0.1", 0)
        port = listener.getsockname()[1]
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
