"""The HTTP/1.1 parser ``lcs serve`` runs: uvicorn's httptools protocol, with a bound on the request head.

Why httptools: h11 is pure Python, and parsing and writing with it cost a worker 7-9% of its throughput at n = 1, 32
connections (issue 28). Why the subclass: uvicorn's httptools protocol keeps a request line and its headers without
a limit (h11 has its largest incomplete event), so one client streaming an endless header could grow the process
without bound; and a URL of 64 KiB or more fails httptools' URL parser (16-bit offsets), a bare 400. Here the
request line and headers count against MAX_HEAD_BYTES as the parser hands them over; a header value still arriving
(httptools buffers it until it ends) is bounded by counting whole reads that begin and end inside a head. Past the
bound the request gets the JSON error envelope (414 while in the request line, else 431), nothing of it reaches the
app, and the connection closes. The close lingers (as Apache's and nginx's do): the answer goes out with a FIN, and
what the client still sends is read and dropped for up to LINGER_S, so a client still sending reads the answer, not
a reset.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 32 << 10  # request line + headers (Node's bound is 16 KiB); a query over 8 KiB is the app's 414
LINGER_S = 2.0
_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.head_bytes = self.reads = self.heads = 0
        self.in_body, self.too_long, self.refused = False, 0, False
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering: dropped unread
            return
        in_head, heads = not self.in_body, self.heads
        super().data_received(data)
        if self.too_long:
            self.refuse_head(self.too_long)
        # a read that began and ended inside one request head holds only head bytes; one that also held a body's
        # bytes (a head ended or began in it) is not counted: a large upload's first read is no reason to refuse
        elif in_head and not self.in_body and heads == self.heads and not self.transport.is_closing():
            self.reads += len(data)
            if self.reads > MAX_HEAD_BYTES:
                self.refuse_head(431)

    # the parser's callbacks: a head over the bound is counted, never kept, and never reaches the app
    def on_message_begin(self) -> None:
        self.head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.too_long = self.too_long or 414
        elif not self.too_long:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.head_bytes > MAX_HEAD_BYTES:
            self.too_long = self.too_long or 431
        elif not self.too_long:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.reads, self.in_body, self.heads = 0, True, self.heads + 1
        if not self.too_long:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.too_long:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        if not self.too_long:
            super().on_message_complete()

    def refuse_head(self, status: int) -> None:
        """The envelope, then a lingering close: nothing more of this connection is parsed or answered."""
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
        if self.cycle is not None:  # a pipelined request before this one writes nothing after the close
            self.cycle.disconnected = True
        self.transport.write(head + body)
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
