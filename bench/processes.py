"""Starting and stopping what a measurement needs, by PID, also on Ctrl-C and on errors.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only the bench, which then
stops each child it started: SIGTERM, a bounded wait, SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 60.0
POLL_S = 0.05


class ChildFailed(RuntimeError):
    """A child process died or did not get ready; the message carries the end of its log."""


@dataclass
class Child:
    """A started process, its log file and what it reported when ready."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Owns the children of one measurement; `close()` (or leaving the `with`) stops them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._children: list[Child] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        ready_file: bool = True,
        timeout: float = READY_TIMEOUT_S,
    ) -> Child:
        """Start `argv`; with `ready_file`, wait for it to write its ready JSON (path passed as
        the last argument) and return it in `child.ready`."""
        log_path = self.workdir / f"{name}.log"
        ready_path = self.workdir / f"{name}.ready.json"
        # A child of the same name may have run before (another round): its facts are stale.
        ready_path.unlink(missing_ok=True)
        args = [*argv, str(ready_path)] if ready_file else list(argv)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        child = Child(name, process, log_path, {})
        self._children.append(child)
        if ready_file:
            child.ready = _wait_ready(child, ready_path, timeout)
        return child

    def stop(self, child: Child) -> None:
        """SIGTERM, wait up to STOP_GRACE_S, then SIGKILL; by PID, never by name."""
        if child in self._children:
            self._children.remove(child)
        if child.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)
        try:
            child.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            child.process.wait(STOP_GRACE_S)

    def close(self) -> None:
        for child in reversed(list(self._children)):
            self.stop(child)


def _wait_ready(child: Child, ready_path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready_path.exists():
            return dict(json.loads(ready_path.read_text()))
        if child.process.poll() is not None:
            raise ChildFailed(
                f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
            )
        time.sleep(POLL_S)
    raise ChildFailed(f"{child.name} not ready after {timeout:.0f} s:\n{child.log_tail()}")


def write_ready(path: str | Path, facts: dict[str, Any]) -> None:
    """Write the ready JSON atomically, so the parent never reads half of it."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(facts, handle)
    os.replace(temporary, target)


def run_json(argv: Sequence[str], *, stdin: str = "", timeout: float) -> dict[str, Any]:
    """Run a measuring child to completion and parse the JSON line it prints last."""
    done = subprocess.run(
        list(argv),
        input=stdin.encode(),
        capture_output=True,
        timeout=timeout,
        start_new_session=True,
        check=False,
    )
    if done.returncode != 0:
        raise ChildFailed(
            f"{' '.join(argv[:4])} exited with {done.returncode}:\n"
            + done.stderr.decode(errors="replace")[-2000:]
        )
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise ChildFailed(f"{' '.join(argv[:4])} printed no result")
    return dict(json.loads(lines[-1]))


def python_module(module: str, *args: str) -> list[str]:
    """argv for running `module` with this interpreter."""
    return [sys.executable, "-m", module, *args]
