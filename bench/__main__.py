"""`python -m bench` (`make bench`): every figure as a ratio to a baseline from the same run.

    python -m bench              the full run (a few minutes)
    python -m bench --quick      shorter measurements and smaller data sets, for a smoke check
    python -m bench --only verify --only storage-sqlite

It prints one table and the JSON report, and writes the report to bench/results/ (ignored by git).
Everything it starts it stops, also on Ctrl-C; it only ever talks to loopback addresses.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import gateway, interceptor, memory, scaling, storage, transport, verify
from bench.machine import wait_for_quiet
from bench.runner import Measurement, Run, now, report, run_all, save, table

MEASUREMENTS: list[tuple[str, Measurement]] = [
    ("verify", verify.measure),
    ("interceptor", interceptor.measure),
    ("transport", transport.measure),
    ("storage-sqlite", storage.measure_sqlite),
    ("storage-postgres", storage.measure_postgres),
    ("gateway", gateway.measure),
    ("scaling", scaling.measure),
    ("memory", memory.measure),
]


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `Processes` block stops what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _ in MEASUREMENTS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, small data sets")
    parser.add_argument("--only", action="append", choices=names, help="run only these")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON report")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    def echo(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    selected = [(n, m) for n, m in MEASUREMENTS if not args.only or n in args.only]
    quiet = wait_for_quiet()
    if quiet.quiet:
        echo(f"# machine {quiet.idle:.0%} idle (waited {quiet.waited_s:.0f} s for it)")
    else:
        echo(
            f"# machine still busy after {quiet.waited_s:.0f} s ({quiet.idle:.0%} idle): "
            "the figures may come out lower than on a quiet machine"
        )
    started = now()
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as workdir:
        run = Run(workdir=Path(workdir), quick=args.quick, quiet=quiet)
        try:
            outcomes = run_all(selected, run, echo)
        except KeyboardInterrupt:
            print("\ninterrupted: every process the bench started has been stopped", flush=True)
            return 130
    data = report(outcomes, run, started)
    path = save(data)
    echo("")
    echo(json.dumps(data, indent=2))
    echo("")
    echo(table(outcomes))
    echo(f"\nreport: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    if args.json_only:
        print(json.dumps(data))
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
