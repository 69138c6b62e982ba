"""The example app as gunicorn serves it in the rotation tests, with two test-only additions:

- the package clock reads real time plus an offset kept in a file (``ROTATION_CLOCK_FILE``), so the
  test moves time for every worker, the CLI and the resource server at once (no sleeping through
  the rotation waits);
- each answer names the worker that gave it (``X-Worker-Pid``), so the test can see that every
  worker follows a rotation without a restart.

``rotation_app:app`` is built on first access (like example_app), so importing this module for
:class:`OffsetClock` has no side effects.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_shared_clock: Any = None


class OffsetClock:
    """Real time plus the offset in ``path``; ``advance`` replaces the file atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            self._write(0.0)

    def __call__(self) -> float:
        return time.time() + float(self.path.read_text())

    def advance(self, seconds: float) -> None:
        self._write(float(self.path.read_text()) + seconds)

    def _write(self, offset: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(repr(offset))
        os.replace(tmp, self.path)  # a worker reading at the same time sees the old or the new value


def create_app() -> Any:
    from example_app import create_app as create_example_app
    from flask_oauth_hsm import clock

    global _shared_clock
    # Entered for the life of this process; the reference keeps the generator from being closed
    # (which would run its ``finally`` and put the real clock back).
    _shared_clock = clock.use(OffsetClock(os.environ["ROTATION_CLOCK_FILE"]))
    _shared_clock.__enter__()
    app = create_example_app()

    @app.after_request
    def name_the_worker(response):  # type: ignore[no-untyped-def]
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
