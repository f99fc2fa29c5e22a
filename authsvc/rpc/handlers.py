"""Wrapping grpc.aio method handlers, for interceptors that need the servicer context.

`grpc.aio.ServerInterceptor.intercept_service` sees only the method name and metadata; checks that
need the context (peer certificate, status code, trailing metadata) run inside the handler. This is
the one place that rebuilds a handler around its behaviour.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]
StreamBehaviour = Callable[[Any, Context], AsyncIterator[Any]]


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[UnaryBehaviour], UnaryBehaviour],
    stream: Callable[[StreamBehaviour], StreamBehaviour],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its unary-unary or unary-stream behaviour replaced by
    `unary(behaviour)` or `stream(behaviour)`.

    Client-streaming handlers (none in authsvc.v1 today) raise TypeError instead of passing
    through: callers wrap a handler to refuse or to check a call, and a handler returned unwrapped
    would run as if allowed. Raised from an interceptor, the error fails the call.
    """
    # grpc-stubs types handler behaviours as sync; on an aio server they are coroutines.
    behaviours: Any = handler
    if behaviours.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(behaviours.unary_unary),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if behaviours.unary_stream is not None:
        # A streaming behaviour is an async generator, or a coroutine that sends with
        # context.write() (grpc_health's Watch). grpc tells them apart by the kind of function,
        # so a coroutine keeps a coroutine wrapper: an `async for` over it would fail.
        if inspect.iscoroutinefunction(behaviours.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                unary(behaviours.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            stream(behaviours.unary_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )
    raise TypeError("cannot wrap a client-streaming handler; add its kind to wrap_handler")
