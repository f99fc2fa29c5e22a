"""authsvc's own `issue_token_pair` and `rotate`, called in-process at concurrency C, no gRPC.

    python -m bench.domain_load issue|rotate --data-dir DIR [--database-url URL] --duration S

The like-for-like side of the storage rows: `bench.raw_sql` runs the same SQL transactions on the
bare driver with no transport, and so does this, through the whole domain (the client check, the
family and its first refresh token, the audit row, the signed access token; for a rotation the
compare-and-set on the parent, the child, the family's idle expiry) with authsvc's storage as it
runs in `authsvc serve` (group commit on SQLite, the pool on PostgreSQL). Concurrent callers are
what lets group commit share a commit, as they would over gRPC. It prints one JSON line like
`bench.raw_sql`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.machine import percentile
from bench.raw_sql import closed_loop
from bench.serve import APP_AUDIENCE, APP_SCOPES


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from authsvc.authority import open_authority
    from authsvc.clock import SystemClock
    from authsvc.testing import throwaway_settings

    overrides: dict[str, Any] = {"kek": args.kek}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = throwaway_settings(Path(args.data_dir), **overrides)
    authority = await open_authority(settings, SystemClock())
    try:
        app = await authority.create_client(
            "bench-domain",
            grant_types=["client_credentials", "refresh_token"],
            scopes=APP_SCOPES,
            audiences=[APP_AUDIENCE],
        )

        async def issue() -> Any:
            return await authority.issue_token_pair(
                subject="bench-user", client_id=app.client_id, audience=[APP_AUDIENCE]
            )

        heads = [(await issue()).refresh_token for _ in range(args.concurrency)]

        async def work(i: int) -> None:
            if args.mode == "issue":
                await issue()
            else:
                heads[i] = (await authority.rotate(heads[i])).refresh_token

        await closed_loop(work, args.concurrency, args.warmup)
        latencies, elapsed = await closed_loop(work, args.concurrency, args.duration)
    finally:
        await authority.close()
    latencies.sort()
    return {
        "method": f"domain {args.mode}",
        "ok": len(latencies),
        "errors": 0,
        "duration_s": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "concurrency": args.concurrency,
    }


def _kek(data_dir: Path) -> str:
    """The key-encryption key of this data directory: every round opens the same database."""
    from authsvc.keys.sealing import new_kek_text

    data_dir.mkdir(parents=True, exist_ok=True)
    kek_file = data_dir / "bench-kek"
    if not kek_file.exists():
        kek_file.write_text(new_kek_text())
    return kek_file.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["issue", "rotate"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    args.duration = min(args.duration, 60.0)
    args.kek = _kek(Path(args.data_dir))
    from authsvc.serve import run_event_loop

    print(json.dumps(run_event_loop(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
