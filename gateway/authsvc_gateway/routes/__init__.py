"""The HTTP endpoints: thin edges that parse, call authsvc through the backend, and answer."""
