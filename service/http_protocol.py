"""The HTTP/1.1 parser ``lcs serve`` runs: uvicorn's httptools protocol, with a bound on the request head.

Why httptools: h11 is pure Python, and parsing and writing with it cost a worker 7-9% of its throughput at n = 1, 32
connections (issue 28). Why the subclass: uvicorn's httptools protocol keeps a request line and its headers without
a limit (h11 has its largest incomplete event), so one client streaming an endless header could grow the process
without bound. Here every byte that arrives outside a request body counts against MAX_HEAD_BYTES; past it the
request gets the JSON error envelope (414 while still in the request line, else 431) and its connection closes. The
bound holds to within one socket read: a read is counted whole, and one that ends a body and starts the next head
is not counted. The close lingers (as Apache's and nginx's do): the answer goes out with a FIN, what the client
still sends is read and dropped for up to LINGER_S, so a client still sending reads the answer, not a reset.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 << 10  # request line + headers; Node's is 16 KiB, a query string over 8 KiB is a 414 anyway
LINGER_S = 2.0
_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.head_bytes, self.in_body, self.heads, self.refused = 0, False, 0, False
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering: dropped unread
            return
        in_head, heads = not self.in_body, self.heads
        super().data_received(data)
        # a read that began and ended inside one request head holds only head bytes; one that also held a body's
        # bytes (a head ended or began in it) is not counted: a large upload's first read is no reason to refuse
        if in_head and not self.in_body and heads == self.heads and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse_head()

    def on_headers_complete(self) -> None:
        self.head_bytes, self.in_body, self.heads = 0, True, self.heads + 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body = False
        super().on_message_complete()

    def refuse_head(self) -> None:
        """The envelope, then a lingering close: what is left of the head is never parsed."""
        status = 414 if 2 * len(getattr(self, "url", b"")) > self.head_bytes else 431
        code, what = ("uri_too_long", "request line") if status == 414 else ("header_fields_too_large", "request head")
        body = json.dumps(
            {
                "error": {
                    "code": code,
                    "message": f"the {what} exceeds {MAX_HEAD_BYTES} bytes",
                    "details": {"limit": MAX_HEAD_BYTES},
                }
            }
        ).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
