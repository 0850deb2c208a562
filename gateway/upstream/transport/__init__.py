"""The only package that imports aiohttp (and httptools): one pooled client session per process, send and read.

aiohttp's exceptions are mapped here to the gateway's UpstreamError tree, so nothing above this
package knows which HTTP client moves the bytes. `client.Transport` sends, `request` builds the
upstream request, `response.HttpResponse` reads the answer.

What of aiohttp this package uses beyond its documented client API, and why (an aiohttp release that
changes one fails tests/upstream/test_transport_send.py's digests or tests/upstream's behaviour):
- ClientRequest's constructor, send(connection) and update_auto_headers (overridden): the request,
  built and written without ClientSession._request's layers (Transport._exchange says which);
  for the usual request its attributes set directly (UpstreamRequest.lean: __init__'s result)
  and its send() short (head and small body written at once: StreamWriter, write_bytes), its
  socket write handed to batch.WriteBatch (StreamWriter._write/_writelines overridden) so that the
  requests of one loop pass reach the upstream back to back, while BaseConnector._acquired (the
  connections in use) says another request is in flight.
- BaseConnector.connect(request, traces, timeout), ResponseHandler.set_response_params(...),
  ClientResponse.start(connection): _connect_and_send_request's three steps.
- helpers.TimeoutHandle / TimerNoop: the total timeout as aiohttp's request arms it.
- StreamReader's buffer, waiter and counts, ResponseHandler.read_timeout/_reading_paused:
  HttpResponse.read_chunk's lean read and the idle watch (tests/upstream/test_transport_reads.py).
- ResponseHandler._parser and the three calls the protocol makes on it (feed_data, feed_eof,
  pause_reading): chunked.HeadFirst and chunked.ChunkedBody answer them in its place once the
  answer's head is parsed, so a chunked body is fed per read rather than per HTTP chunk; httptools
  (llhttp, as uvicorn runs it) decodes it (tests/upstream/test_transport_chunked.py).
"""

from gateway.upstream.transport.client import Transport
from gateway.upstream.transport.response import HttpResponse

__all__ = ["HttpResponse", "Transport"]
