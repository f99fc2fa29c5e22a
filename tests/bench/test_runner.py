"""The bench's verdicts: which figures meet their targets, how the table shows them, and which
round pair a throughput row reports. Pure functions; nothing here starts a process."""

from __future__ import annotations

from typing import Any

import pytest

from bench.grpc_rows import paired
from bench.runner import Figure, Outcome, ratio_text, table


def _figure(subject: float, baseline: float | None, **kwargs: Any) -> Figure:
    return Figure("row", subject, baseline, "rps", **kwargs)


@pytest.mark.parametrize(
    ("subject", "baseline", "better", "target", "met"),
    [
        (85, 100, "higher", 0.85, True),  # on the line is met
        (84.9, 100, "higher", 0.85, False),
        (120, 100, "lower", 1.2, True),
        (120.1, 100, "lower", 1.2, False),
        (50, 100, "none", None, None),  # reported only
        (50, 100, "higher", None, None),  # no target
        (50, None, "higher", 0.5, None),  # no baseline
        (50, 0, "higher", 0.5, None),  # a baseline that measured nothing
    ],
)
def test_met(
    subject: float, baseline: float | None, better: Any, target: float | None, met: bool | None
) -> None:
    assert _figure(subject, baseline, better=better, target=target).met is met


@pytest.mark.parametrize(
    ("subject", "baseline", "target", "better", "shown"),
    [
        (1_697, 2_001, 0.85, "higher", "0.848×"),  # would read 0.85× beside "NO"
        (399, 797, 0.5, "higher", "0.501×"),  # met, but rounds onto the line
        (850, 1_000, 0.85, "higher", "0.850×"),
        (911, 1_000, 0.85, "higher", "0.91×"),  # clear of the line: two decimals
        (1_204, 1_000, 1.2, "lower", "1.204×"),
        (1_010, 1_000, 1.2, "lower", "1.01×"),
        (1_497, 1_000, None, "higher", "1.50×"),  # no target to misread
    ],
)
def test_ratio_text_never_contradicts_the_verdict(
    subject: float, baseline: float, target: float | None, better: Any, shown: str
) -> None:
    assert ratio_text(_figure(subject, baseline, target=target, better=better)) == shown


def test_ratio_text_without_baseline() -> None:
    assert ratio_text(_figure(1, None)) == "-"


def test_table_row() -> None:
    rows = table(
        [Outcome("verify", [Figure("Verify rps, C=16", 1_697, 2_001, "rps", target=0.85)])]
    )
    assert "| Verify rps, C=16 | 1,697 rps | 2,001 rps | 0.848× | ≥ 0.85× | NO |" in rows


def _rounds(*rps: float) -> list[dict[str, float]]:
    return [{"rps": r} for r in rps]


def test_paired_takes_the_median_pair_not_each_sides_best() -> None:
    base = _rounds(100, 200, 100)
    subject = _rounds(95, 120, 60)  # ratios 0.95, 0.60, 0.60
    chosen_base, chosen_subject = paired(base, subject)
    assert chosen_subject["rps"] / chosen_base["rps"] == pytest.approx(0.6)


def test_paired_with_an_even_number_takes_the_lower_middle() -> None:
    base = _rounds(100, 100, 100, 100)
    subject = _rounds(90, 80, 70, 60)
    chosen_base, chosen_subject = paired(base, subject)
    assert chosen_subject["rps"] / chosen_base["rps"] == pytest.approx(0.7)
