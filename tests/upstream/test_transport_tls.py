"""transport.Transport.send to an https upstream: aiohttp's connector does the TLS (its default,
verifying context, and the URL's host as SNI); the lean request changes nothing of it."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from aiohttp import connector

from gateway.errors import UpstreamConnectError
from gateway.upstream.endpoint import Endpoint
from gateway.upstream.transport import Transport

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` (openssl), as (certificate, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_an_https_upstream_is_verified_and_named(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    names: list[str | None] = []

    def named(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    server_side.sni_callback = named
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(ANSWER)
        await writer.drain()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_side)
    endpoint = Endpoint("tls", None, f"https://localhost:{server.sockets[0].getsockname()[1]}/v1", {})
    transport = Transport()
    await transport.start()
    try:
        with pytest.raises(UpstreamConnectError, match="cannot connect to tls"):
            await transport.send(endpoint, {}, connect=5, read=5, total=5)  # not a trusted certificate
        assert names == ["localhost"]
        # Trusted by aiohttp's own verifying context (this test process only) from here on.
        connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cert)
        response = await transport.send(endpoint, {"n": 1}, connect=5, read=5, total=5)
        assert (response.status, await response.read_all(100)) == (200, b"{}")
        response.release()
        assert names == ["localhost", "localhost"]
        assert received[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:")
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_a_stream_from_an_https_upstream_reads_straight_from_the_connection(tmp_path: Path) -> None:
    """Past its first token a chunked stream's decoder is the TLS connection's protocol
    (transport/chunked.py): every chunk arrives, and the connection serves the next request."""
    cert, key = _certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    steps = [asyncio.Event() for _ in range(3)]
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            for _ in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 0\n\n\r\n")
                for n, step in enumerate(steps, 1):
                    await step.wait()
                    writer.write(b"9\r\ndata: %d\n\n\r\n" % n)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_side)
    endpoint = Endpoint("tls", None, f"https://localhost:{server.sockets[0].getsockname()[1]}/v1", {})
    connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cert)
    transport = Transport()
    await transport.start()
    try:
        for _ in range(2):
            response = await transport.send(endpoint, {"stream": True}, connect=5, read=5, first_byte=5)
            async with asyncio.timeout(10):
                assert await response.read_chunk() == b"data: 0\n\n"
                response.set_read_timeout(5)
                for n, step in enumerate(steps, 1):
                    step.set()
                    assert await response.read_chunk() == b"data: %d\n\n" % n
                assert await response.read_chunk() == b""
            response.release()
            for step in steps:
                step.clear()
        assert connections == 1
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
