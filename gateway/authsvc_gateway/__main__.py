"""`python -m authsvc_gateway`: run the gateway alone, configured from `AUTHSVC_*` variables."""

from __future__ import annotations

import asyncio
import os
import sys

from authsvc import log
from authsvc.config import warn_unknown_variables
from authsvc_gateway.config import ConfigError, GatewayConfig
from authsvc_gateway.server import UpstreamUnavailable, serve


def main() -> int:
    """Run until interrupted; exit 2 on a configuration error, 1 when authsvc does not answer."""
    # The same logs as `authsvc gateway`: JSON lines on stderr, secrets redacted.
    level = os.environ.get("AUTHSVC_LOG_LEVEL") or "INFO"
    try:
        log.configure(level)
    except ValueError:
        print(f"authsvc gateway: AUTHSVC_LOG_LEVEL: unknown level {level!r}", file=sys.stderr)
        return 2
    warn_unknown_variables()
    try:
        config = GatewayConfig.from_env()
        asyncio.run(serve(config))
    except ConfigError as error:
        print(f"authsvc gateway: {error}", file=sys.stderr)
        return 2
    except UpstreamUnavailable as error:
        print(f"authsvc gateway: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
