"""The server's HTTP protocol (service.http_protocol) on a real uvicorn, over raw sockets: request heads are bounded,
bodies and pipelined requests are not mistaken for heads."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from bench.ports import free_port
from service.http_protocol import MAX_HEAD_BYTES, BoundedHttpToolsProtocol


async def echo(scope, receive, send):
    """Answers with the body's length and the number of headers it saw."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size, "headers": len(scope["headers"]), "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def addr():
    port = free_port()
    config = uvicorn.Config(echo, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield ("127.0.0.1", port)
    server.should_exit = True
    thread.join(10)


def answers(sock: socket.socket, count: int = 1) -> list[tuple[int, bytes]]:
    """Read ``count`` responses (status, body) off a connection; each has a content-length."""
    buf, out = b"", []
    while len(out) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            length = int(
                next(v for k, v in (h.split(": ", 1) for h in head.split("\r\n")[1:]) if k.lower() == "content-length")
            )
            if len(buf) >= head_end + 4 + length:
                out.append((int(head.split(" ")[1]), buf[head_end + 4 : head_end + 4 + length]))
                buf = buf[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} answers"
        buf += chunk
    return out


def send_in_pieces(sock: socket.socket, data: bytes, piece: int = 8192) -> None:
    """Send in pieces, as a client streaming a head would, as fast as the socket takes them: the server answers while
    they still arrive (its lingering close lets them in, so the answer is read rather than lost to a reset)."""
    for i in range(0, len(data), piece):
        sock.sendall(data[i : i + piece])


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    ("head", "status", "code"),
    [
        (b"GET /" + b"a" * (4 * MAX_HEAD_BYTES), 414, "uri_too_long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"b" * (4 * MAX_HEAD_BYTES), 431, "header_fields_too_large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: c\r\n" * (MAX_HEAD_BYTES // 5), 431, "header_fields_too_large"),
    ],
    ids=["request-line", "one-endless-header", "many-headers"],
)
def test_a_head_over_the_limit_gets_the_envelope_and_the_connection_closes(addr, head, status, code):
    with socket.create_connection(addr, timeout=10) as sock:
        send_in_pieces(sock, head)
        [(got, body)] = answers(sock)
        assert got == status
        error = json.loads(body)["error"]
        assert error["code"] == code and error["details"]["limit"] == MAX_HEAD_BYTES
        assert closed(sock)


@pytest.mark.parametrize("size", [MAX_HEAD_BYTES + 1, 100_000])
def test_a_whole_request_over_the_limit_in_one_send_gets_the_envelope(addr, size):
    """Complete in one read, so the parser sees the head end before the read is counted: the callbacks count it (a
    URL of 64 KiB or more would otherwise fail httptools' URL parser: a bare 400)."""
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(b"GET /" + b"u" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, body)] = answers(sock)
        assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"
        assert closed(sock)


def test_a_head_just_under_the_limit_is_served(addr):
    filler = b"X-Pad: " + b"d" * (MAX_HEAD_BYTES - 200) + b"\r\n"
    with socket.create_connection(addr, timeout=10) as sock:
        send_in_pieces(sock, b"GET /under HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
        [(status, body)] = answers(sock)
    assert status == 200 and json.loads(body)["path"] == "/under"


def test_a_large_body_in_the_first_read_is_not_taken_for_a_head(addr):
    """Head and 1 MiB of body in one send: the server's first read holds far more than MAX_HEAD_BYTES."""
    body = b"e" * (1 << 20)
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        [(status, answer)] = answers(sock)
    assert status == 200 and json.loads(answer)["size"] == len(body)


def test_pipelined_requests_after_large_bodies_are_each_answered(addr):
    body = b"f" * (3 * MAX_HEAD_BYTES)
    one = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(addr, timeout=10) as sock:
        sock.sendall(one * 3 + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
        got = answers(sock, 4)
    assert [s for s, _ in got] == [200] * 4
    assert [json.loads(b)["size"] for _, b in got] == [len(body)] * 3 + [0]


def test_many_small_requests_on_one_connection_never_add_up_to_a_refusal(addr):
    """The count starts over with every head: 2,000 keep-alive requests (5x the limit in head bytes) all answered."""
    request = b"GET /k HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"g" * 100 + b"\r\n\r\n"
    assert 2000 * len(request) > 4 * MAX_HEAD_BYTES
    with socket.create_connection(addr, timeout=10) as sock:
        for _ in range(20):
            sock.sendall(request * 100)
            assert [s for s, _ in answers(sock, 100)] == [200] * 100
