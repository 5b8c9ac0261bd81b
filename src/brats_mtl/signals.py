"""SIGTERM handling and the exception that ends a process stopped by it.

SIGTERM (a scheduler's stop, ``kill``): Lightning's own handler, installed during each fit,
only sets a flag that its loops check after the training step in progress; a SIGTERM that
arrives during a fold's last step, its final validation or outside a fit (caching,
prediction) would be forgotten or, with no handler at all, kill the process without
cleanup. So: the step in progress finishes and is saved in ``last.ckpt`` (a consistent
resume point), and the fit then ends with :class:`Terminated` (``SystemExit`` with status
143, 128 + SIGTERM, as a shell reports a process killed by SIGTERM) instead of Lightning's
status 0; under :func:`stop_on_sigterm` (the CLI commands) a SIGTERM outside a fit, or a
second one during a step, raises :class:`Terminated` at once.

Source: POSIX signal semantics (exit status 128 + signal number, as shells report it);
Lightning 2.6's ``SIGTERMException``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Exit status after SIGTERM (128 + 15, as shells report a process that SIGTERM ended).
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """The process was asked to stop by SIGTERM; exit status :data:`SIGTERM_EXIT_STATUS`.

    A ``SystemExit`` (as Lightning's own ``SIGTERMException``), so that ``except
    Exception`` blocks do not swallow it and the process ends with status 143.

    Attributes:
        message: what stopped and how to continue.
    """

    def __init__(self, message: str) -> None:
        """Carry ``message``; the exit status is :data:`SIGTERM_EXIT_STATUS`."""
        super().__init__(SIGTERM_EXIT_STATUS)
        self.message = message

    def __str__(self) -> str:
        """The message (not the exit status, which ``SystemExit`` would show)."""
        return self.message


@dataclass
class SigtermState:
    """Whether a training fit runs, and whether SIGTERM came during it.

    Attributes:
        in_fit: a Lightning fit is running (its loops stop after the step).
        received: SIGTERM came during the current fit.
    """

    in_fit: bool = False
    received: bool = False


_SIGTERM = SigtermState()


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM handler of :func:`stop_on_sigterm`."""
    if _SIGTERM.in_fit and not _SIGTERM.received:
        _SIGTERM.received = True
        logger.warning(
            "SIGTERM: stopping after the training step in progress, which is saved in "
            "last.ckpt (send SIGTERM again to stop at once)"
        )
        return
    raise Terminated("stopped by SIGTERM; run the command again with --resume to continue")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM stops the process promptly with exit status 143.

    During a training fit the step in progress finishes and is saved first (see the
    module docstring); anywhere else, or on a second SIGTERM, :class:`Terminated` is
    raised at once, so ``finally`` blocks run (temporary files are removed). The previous
    handler is restored on exit. Outside the main thread nothing is installed (Python
    delivers signals to the main thread only).

    Raises:
        Terminated: on SIGTERM; its message is logged at ERROR level first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except Terminated as err:
        logger.error("%s", err.message)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        _SIGTERM.received = False


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[SigtermState]:
    """Within the block (a training fit), a first SIGTERM is only recorded.

    Under :func:`stop_on_sigterm` the handler then logs a WARNING and returns, so the
    training step in progress finishes and is saved; the caller reads ``received`` after
    the block and raises :class:`Terminated` itself. A second SIGTERM raises at once.

    Yields:
        The :class:`SigtermState`; ``received`` tells whether SIGTERM came in the block.
    """
    _SIGTERM.in_fit, _SIGTERM.received = True, False
    try:
        yield _SIGTERM
    finally:
        _SIGTERM.in_fit = False
