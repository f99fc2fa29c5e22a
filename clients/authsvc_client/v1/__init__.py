"""Generated protobuf and gRPC modules for authsvc.v1 (`make protos`; never edited by hand)."""
