"""authsvc: the token authority (domain, storage, gRPC servicers, CLI)."""

__version__ = "0.1.0"
