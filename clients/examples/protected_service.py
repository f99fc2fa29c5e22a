"""Notes: a gRPC service protected by authsvc, as a new user would write it.

Run it next to a running authsvc (`make run` at the repository root):

    AUTHSVC_ADDRESS=127.0.0.1:50051 AUTHSVC_ISSUER=http://127.0.0.1:8080 \
    NOTES_CLIENT_ID=... NOTES_CLIENT_SECRET=... python protected_service.py

The client id and secret are those of an OAuth client registered for this service; it uses them
only to subscribe to revocations. Callers need tokens with audience `notes`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
from authsvc_client import AsyncAuthInterceptor, ServiceCredentials, current_claims

AUDIENCE = "notes"
# Scopes for methods whose proto has no `authsvc.v1.required_scopes` option; the rest come from
# the option in protos/notes.proto.
REQUIRED_SCOPES = {"/notes.v1.Notes/DeleteNote": ["notes:write"]}
PUBLIC_METHODS = ["/notes.v1.Notes/Ping"]


class Notes(notes_pb2_grpc.NotesServicer):
    """Notes in memory, each owned by the subject that wrote it."""

    def __init__(self) -> None:
        self._notes: dict[str, notes_pb2.Note] = {}

    async def ReadNote(self, request: Any, context: grpc.aio.ServicerContext) -> notes_pb2.Note:
        note = self._notes.get(request.id)
        if note is None or note.owner != current_claims().sub:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such note")
        return note

    async def WriteNote(self, request: Any, context: grpc.aio.ServicerContext) -> notes_pb2.Note:
        note = notes_pb2.Note(id=request.id, owner=current_claims().sub, text=request.text)
        self._notes[request.id] = note
        return note

    async def DeleteNote(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        note = self._notes.get(request.id)
        deleted = note is not None and note.owner == current_claims().sub
        if deleted:
            del self._notes[request.id]
        return notes_pb2.DeleteNoteResponse(deleted=deleted)

    async def WhoAmI(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        claims = current_claims()
        return notes_pb2.WhoAmIResponse(
            subject=claims.sub, client_id=claims.client_id, scope=sorted(claims.scope)
        )

    async def ListNotes(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notes_pb2.Note]:
        owner = current_claims().sub
        for note in list(self._notes.values()):
            if note.owner == owner:
                yield note

    async def Ping(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return notes_pb2.PingResponse(status="ok")


async def serve(
    authority: str,
    issuer: str,
    credentials: ServiceCredentials | None,
    address: str = "127.0.0.1:0",
    **protection: Any,
) -> tuple[grpc.aio.Server, int, AsyncAuthInterceptor]:
    """Start the protected service on `address`; returns (server, port, interceptor). Stop it
    with `await server.stop(grace)` and then `await interceptor.close()`."""
    # --- protect your service: the ten lines ---------------------------------------------
    auth = AsyncAuthInterceptor(
        authority,
        issuer=issuer,
        audience=AUDIENCE,
        credentials=credentials,
        required_scopes=REQUIRED_SCOPES,
        public_methods=PUBLIC_METHODS,
        **protection,
    )
    server = grpc.aio.server(interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(Notes(), server)
    port = server.add_insecure_port(address)
    await auth.start()
    await server.start()
    # ----------------------------------------------------------------------------------------
    return server, port, auth


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("NOTES_ADDRESS", "127.0.0.1:50052"))
    options = parser.parse_args()
    authority = os.environ.get("AUTHSVC_ADDRESS", "127.0.0.1:50051")
    credentials = ServiceCredentials(
        authority,
        client_id=os.environ["NOTES_CLIENT_ID"],
        client_secret=os.environ["NOTES_CLIENT_SECRET"],
        audience=["authsvc"],  # the revocation stream is an authsvc API
    )
    issuer = os.environ.get("AUTHSVC_ISSUER", "http://127.0.0.1:8080")
    server, port, auth = await serve(authority, issuer, credentials, options.address)
    logging.info("notes listening on port %d", port)
    try:
        await server.wait_for_termination()
    finally:
        # Let calls in flight finish (grace), then stop the revocation stream.
        await server.stop(5)
        await auth.close()
        credentials.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
