"""The gRPC edge: servicers that translate to the domain, caller authorization, the server."""
