"""What every measurement shares: its settings, its figures, the table and the JSON they end in.

A measurement is a function from `Run` to a list of `Figure`s. It raises `Skip` with a reason when
something it needs is missing (a package, Node, PostgreSQL, the peers folder); the runner prints the
reason and goes on with the next one. Each figure is a ratio to a baseline measured in the same
run, because the machines this runs on are shared and noisy.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bench.machine import Quiet, describe

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

Better = Literal["higher", "lower", "none"]


class Skip(Exception):
    """This measurement cannot run here; the message says why."""


@dataclass(frozen=True)
class Run:
    """How hard to measure, and where to put working files."""

    workdir: Path
    quick: bool
    concurrency: int = 16
    #: How the machine was when the measurements began (`machine.wait_for_quiet`).
    quiet: Quiet | None = None

    @property
    def duration_s(self) -> float:
        """Seconds per throughput figure (after warm-up)."""
        return 2.0 if self.quick else 5.0

    @property
    def warmup_s(self) -> float:
        return 0.5 if self.quick else 1.0

    @property
    def rounds(self) -> int:
        """Baseline and subject alternate this many times; the best of each counts. Three, not
        two: on a shared machine one round of either side is often hit by a burst of other work,
        and the rows near their targets (Verify, the interceptor, the gateway) moved by ±10 %
        between runs with two."""
        return 1 if self.quick else 3

    def scaled(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Figure:
    """One line of the table: the subject, its baseline from the same run, and their ratio."""

    measurement: str
    subject: float
    baseline: float | None
    unit: str
    better: Better = "higher"
    target: float | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.subject / self.baseline

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target is None or ratio is None or self.better == "none":
            return None
        return ratio >= self.target if self.better == "higher" else ratio <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None or self.better == "none":
            return "reported"
        return f"{'≥' if self.better == 'higher' else '≤'} {self.target:.2f}×"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, met=self.met, target_text=self.target_text)
        return data


Measurement = Callable[[Run], list[Figure]]


@dataclass
class Outcome:
    name: str
    figures: list[Figure] = field(default_factory=list)
    skipped: str = ""
    failed: str = ""
    seconds: float = 0.0


def run_all(
    measurements: Sequence[tuple[str, Measurement]], run: Run, echo: Callable[[str], None]
) -> list[Outcome]:
    """Run each measurement in turn; a skip or a failure is recorded and the next one runs."""
    outcomes = []
    for name, measure in measurements:
        echo(f"# {name} ...")
        started = time.monotonic()
        outcome = Outcome(name)
        try:
            outcome.figures = measure(run)
        except Skip as skip:
            outcome.skipped = str(skip)
            echo(f"#   skipped: {skip}")
        except Exception as exc:
            outcome.failed = f"{type(exc).__name__}: {exc}"
            echo(f"#   FAILED: {outcome.failed}")
            echo(traceback.format_exc(limit=4))
        outcome.seconds = round(time.monotonic() - started, 1)
        for figure in outcome.figures:
            echo(f"#   {_row(figure)}")
        outcomes.append(outcome)
    return outcomes


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    if unit in {"rps", "B/entry"}:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def ratio_text(figure: Figure) -> str:
    """The ratio to two decimals, or to three where two would round it onto its target's line
    and so read as the opposite of `met` (0.848× is not ≥ 0.85×)."""
    ratio = figure.ratio
    if ratio is None:
        return "-"
    text = f"{ratio:.2f}×"
    if figure.target is not None and figure.met is not None and round(ratio, 2) == figure.target:
        text = f"{ratio:.3f}×"
    return text


def _row(figure: Figure) -> str:
    met = {True: "yes", False: "NO", None: ""}[figure.met]
    return " | ".join(
        [
            figure.measurement,
            _number(figure.subject, figure.unit),
            _number(figure.baseline, figure.unit),
            ratio_text(figure),
            figure.target_text,
            met,
        ]
    )


def table(outcomes: Sequence[Outcome]) -> str:
    """The Markdown table of every figure, then one line per skipped or failed measurement."""
    lines = [
        "| measurement | authsvc | baseline (same run) | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for outcome in outcomes:
        lines += [f"| {_row(figure)} |" for figure in outcome.figures]
    for outcome in outcomes:
        if outcome.skipped:
            lines.append(f"\nskipped {outcome.name}: {outcome.skipped}")
        if outcome.failed:
            lines.append(f"\nFAILED {outcome.name}: {outcome.failed}")
    return "\n".join(lines)


def report(outcomes: Sequence[Outcome], run: Run, started: datetime) -> dict[str, Any]:
    return {
        "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": run.quick,
        "concurrency": run.concurrency,
        "machine": describe(run.quiet),
        "measurements": [
            {
                "name": o.name,
                "seconds": o.seconds,
                "skipped": o.skipped or None,
                "failed": o.failed or None,
                "figures": [f.as_json() for f in o.figures],
            }
            for o in outcomes
        ],
    }


def save(data: dict[str, Any]) -> Path:
    """Write the report to bench/results/ (ignored by git), named by its start time."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = data["started_utc"].replace(":", "").replace("-", "")
    path = RESULTS / f"{stamp}{'-quick' if data['quick'] else ''}.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def now() -> datetime:
    return datetime.now(UTC)
