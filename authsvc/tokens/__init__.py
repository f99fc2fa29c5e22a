"""Token formats: RFC 9068 JWT access tokens and opaque, prefixed secrets."""
