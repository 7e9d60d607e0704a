"""Stopping a run: SIGTERM is handled as Ctrl-C is, so every ``with`` block of the run cleans up.

SIGTERM's default action ends the process at once: no ``finally`` runs, so a temp file of
:func:`ltv.io.atomic_write` stays, a LocalCluster is not closed and the MLflow run stays RUNNING. The entry
scripts' ``main`` is wrapped in :func:`entry`, which turns SIGTERM into :class:`Terminated` (a
``KeyboardInterrupt``) raised in the main thread: the blocks unwind as for Ctrl-C (temp files removed, the
cluster closed, the MLflow run ended KILLED by :mod:`ltv.tracking.sweep`), then the process exits with
status 143 (128 + SIGTERM). A second SIGTERM during that cleanup ends the process at once.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_stopped: list[str] = []  # the signal that stopped this process ("SIGTERM", "SIGINT"), once one did


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (a ``KeyboardInterrupt``: whatever cleans up after Ctrl-C runs)."""


def stopped() -> str | None:
    """The signal that is stopping this process (``"SIGTERM"`` or ``"SIGINT"``), or None; for cleanup
    that runs after the exception has left the stack (``atexit`` hooks)."""
    return _stopped[0] if _stopped else None


def run_status(exc: BaseException | None) -> str:
    """The MLflow status of a run that ended with ``exc``: FINISHED (None), KILLED (Ctrl-C, SIGTERM, or a
    stop already under way), FAILED (anything else)."""
    if exc is None:
        return "FINISHED"
    return "KILLED" if isinstance(exc, KeyboardInterrupt) or stopped() else "FAILED"


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    _stopped.append("SIGTERM")
    raise Terminated("stopped by SIGTERM")


def entry(main: Callable) -> Callable:
    """Wrap an entry script's ``main`` (outside ``@hydra.main``): SIGTERM raises :class:`Terminated` while
    it runs (see the module doc), and a run stopped by SIGTERM exits with status 143 once its blocks have
    cleaned up. Outside the main thread (no signal handlers there) ``main`` runs as it is."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return main(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt as exc:
            if not _stopped:
                _stopped.append("SIGINT")
            if isinstance(exc, Terminated):
                print(f"{exc}: cleaned up and stopped", file=sys.stderr)
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        finally:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, previous)

    return wrapped
