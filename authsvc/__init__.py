"""authsvc: the token authority (domain, storage, gRPC servicers, CLI)."""

import os

# gRPC's C core writes its own log lines to stderr (`E1204 ... add_port.cc:83] Failed to add
# port`), which break a pipeline reading authsvc's JSON lines; authsvc reports those failures in
# its own logs. Read once, when grpc is first imported, so it is set before anything imports it.
# GRPC_VERBOSITY=ERROR (or DEBUG) in the environment brings them back, for debugging.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

__version__ = "0.1.0"
