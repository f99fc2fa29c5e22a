"""uvicorn's httptools protocol, with the writes of one event-loop pass sent as one.

uvicorn writes a response's status line and headers when the app starts the response, and the
body when it sends it; uvloop sends each write at once, so every reply of the gateway cost two
`write` system calls and reached the client as two TCP segments (TCP_NODELAY), waking the
client twice. Measured on the embedded gateway (strace): 6,250 writes for 3,126 token
requests, and the header write alone was 11 % of the process's samples (py-spy). Here the
writes a connection makes during one pass of the event loop are joined and written at the end
of it: same bytes, same order, one system call.

It also puts back the limit on request heads that uvicorn's h11 protocol had and its httptools
protocol has not (llhttp sets none): a 10 MB header was read, held in memory and served, and a
header that never ended was held as long as the client kept sending it. A head over
`MAX_HEAD_BYTES` is answered 431 and its connection closed. Trailer fields are dropped.

And it bounds how long a client may take to send a request, which uvicorn does not: its only
timer is the keep-alive one, armed after a reply and disarmed by any byte received, so a
connection that sent nothing, or half a request, or a byte every few seconds, stayed open for
good, and a few hundred of them could take every file descriptor the process has. A request must
arrive whole within `REQUEST_TIMEOUT_SECONDS` of the connection opening or of the previous
reply; otherwise one partly received is answered 408, and the connection is closed.

Nor does it bound how long a client may take to read its replies: asyncio and uvloop close a
connection only once what is buffered for it has been sent, and uvicorn's app waits to write
while too much is, so a client that stopped reading held its connection (and the app's task)
for good. One that reads nothing for `REQUEST_TIMEOUT_SECONDS` while replies wait for it is
dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: The longest request head (request line and headers) read, as uvicorn's h11 protocol limits
#: it (`h11_max_incomplete_event_size`): far above any OAuth request's, and a bound on what a
#: connection can make the gateway hold.
MAX_HEAD_BYTES: Final = 16 * 1024
#: How long a client has to send a whole request: an OAuth request is a few hundred bytes.
REQUEST_TIMEOUT_SECONDS: Final = 20.0


class CoalescedWrites:
    """A connection's transport whose `write`s are sent together once the current loop pass
    ends; everything else is the transport's own. Closing sends what is pending first, then
    calls `on_close`."""

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._on_close = on_close

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what was written since the last flush, in one write."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()
        self._on_close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over `CoalescedWrites` (pass it as uvicorn's `http`), with
    request heads limited to `max_head_bytes` and requests to `request_timeout` seconds."""

    max_head_bytes: ClassVar[int] = MAX_HEAD_BYTES
    request_timeout: ClassVar[float] = REQUEST_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether the bytes arriving now belong to a request head, and how many have so far.
        self._in_head = True
        self._head_bytes = 0
        #: A head that ended over the limit: nothing after it on this connection is served.
        self._head_too_large = False
        #: Whether part of a request has arrived, and when the whole of it must have.
        self._receiving = False
        self._request_deadline: asyncio.TimerHandle | None = None
        #: When a client that reads none of the replies waiting for it is dropped.
        self._unread_deadline: asyncio.TimerHandle | None = None
        #: A refusal held back until the replies owed for earlier (pipelined) requests are sent.
        self._refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescedWrites(  # type: ignore[assignment]
            transport, self.loop, on_close=self._on_close
        )
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # which closes the transport: _on_close may arm a deadline
        self._stop_waiting()
        self._stop_waiting_for_reads()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._await_reads()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.transport.is_closing():  # closing, it still waits on what is unsent
            self._stop_waiting_for_reads()

    def _on_close(self) -> None:
        if self.transport.get_write_buffer_size():
            self._await_reads()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            # Read on, so that closing does not reset the connection over what the client
            # sent, but the connection ends with the refusal: nothing more is parsed or held.
            return
        # A head that has not ended is measured in whole reads (its fields are still inside
        # the parser), so that one that never ends is refused within a read of the limit.
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_too_large or (self._in_head and self._head_bytes > self.max_head_bytes):
            self._refuse(431, "Request header fields too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, llhttp reports a chunked body's trailer fields the same way, and
        # uvicorn added each to the request's headers, however many, as they came: dropped
        # here, as RFC 9110 §6.5.1 lets a recipient do, and never merged into the headers.
        if self._in_head:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_too_large:
            return
        self._in_head = False
        self._head_bytes = 0
        # A head that ended is measured exactly, whatever reads it came in.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            self._head_too_large = True  # answered once the parser returns, in data_received
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._head_too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_too_large:
            return
        super().on_message_complete()
        self._in_head = True
        self._receiving = False
        self._stop_waiting()  # the request is the app's now
        if self.cycle.response_complete:  # answered before it had all arrived
            self._await_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._refusal is None:
            self._await_request()
        else:
            self._refuse(*self._refusal)  # held back again while more replies are owed

    def _await_request(self) -> None:
        # A deadline already set (a reply sent before its request had all arrived) stays.
        if self._request_deadline is None:
            self._request_deadline = self.loop.call_later(
                self.request_timeout, self._request_overdue
            )

    def _stop_waiting(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _await_reads(self) -> None:
        # Reads that resume writing before then stop the clock, so a slow reader is not dropped.
        if self._unread_deadline is None:
            self._unread_deadline = self.loop.call_later(self.request_timeout, self._unread)

    def _stop_waiting_for_reads(self) -> None:
        if self._unread_deadline is not None:
            self._unread_deadline.cancel()
            self._unread_deadline = None

    def _unread(self) -> None:
        self._unread_deadline = None
        self.transport.abort()  # what is unsent can only be dropped

    def _owes_reply(self) -> bool:
        """Whether the app has yet to answer a request received whole (or one queued behind it):
        anything written now would reach the client as that request's reply."""
        cycle = self.cycle  # the last request whose head was read
        answering = cycle is not None and not cycle.response_complete and not cycle.more_body
        return answering or bool(self.pipeline)

    def _request_overdue(self) -> None:
        self._request_deadline = None
        # A reply still owed goes first, whatever has arrived of the next request: a 408 now
        # would take its place. Its reply sets a new deadline.
        if self.transport.is_closing() or self._owes_reply():
            return
        cycle = self.cycle
        unanswered = self._in_head or (cycle is not None and not cycle.response_started)
        if self._receiving and unanswered:
            self._refuse(408, "Request timeout.")
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` and close, as uvicorn's send_400_response answers a request it cannot
        parse; but only once the replies owed for the requests before it are sent."""
        if self._owes_reply():
            self._refusal = (status, reason)  # what arrives meanwhile is read, and dropped
            return
        body = reason.encode("ascii")
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()
