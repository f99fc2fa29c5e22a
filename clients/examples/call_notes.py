"""A service calling the notes service with client-credentials tokens it never handles itself.

    AUTHSVC_ADDRESS=127.0.0.1:50051 REPORTS_CLIENT_ID=... REPORTS_CLIENT_SECRET=... \
    python call_notes.py

`ServiceCredentials` fetches a token from authsvc (one request however many calls need it),
renews it before it expires, and retries a call once with a fresh token on UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import os

import grpc
import notes_pb2
import notes_pb2_grpc
from authsvc_client import ServiceCredentials


async def main() -> None:
    credentials = ServiceCredentials(
        os.environ.get("AUTHSVC_ADDRESS", "127.0.0.1:50051"),
        client_id=os.environ["REPORTS_CLIENT_ID"],
        client_secret=os.environ["REPORTS_CLIENT_SECRET"],
        scope=["notes:read", "notes:write"],
        audience=["notes"],
    )
    # gRPC sends call credentials over secure channels only: TLS in production, or local
    # credentials on loopback as here.
    transport = grpc.local_channel_credentials()
    target = os.environ.get("NOTES_ADDRESS", "127.0.0.1:50052")
    async with credentials.aio_secure_channel(target, transport) as channel:
        notes = notes_pb2_grpc.NotesStub(channel)
        who = await notes.WhoAmI(notes_pb2.WhoAmIRequest())
        print(f"calling notes as {who.subject} with scopes {list(who.scope)}")
        await notes.WriteNote(notes_pb2.WriteNoteRequest(id="hello", text="from reports"))
        note = await notes.ReadNote(notes_pb2.ReadNoteRequest(id="hello"))
        print(f"read back: {note.text!r}")
    credentials.close()


if __name__ == "__main__":
    asyncio.run(main())
