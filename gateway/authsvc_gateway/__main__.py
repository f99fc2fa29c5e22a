"""`python -m authsvc_gateway`: run the gateway alone, configured from `AUTHSVC_*` variables."""

from __future__ import annotations

import asyncio
import logging
import sys

from authsvc_gateway.config import ConfigError, GatewayConfig
from authsvc_gateway.server import serve


def main() -> int:
    """Run until interrupted; exit 2 on a configuration error."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = GatewayConfig.from_env()
        asyncio.run(serve(config))
    except ConfigError as error:
        print(f"authsvc gateway: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
