"""A termination request (SIGTERM, `kill PID`) that is not lost.

The CLI's handler raises KeyboardInterrupt at once, so a run ends like Ctrl-C. Python runs a
handler at whatever bytecode the main thread is at; when that is inside a `__del__` or a weakref
callback, the exception is printed as "Exception ignored in ..." and dropped, and the run goes on
(once in CI a SIGTERMed training ran to the end, exit 0; this is the likely cause). So the handler also
records the request, and long loops (`training.proxy.ProxyTrainer.step`) call `check()`.
"""

from __future__ import annotations

_requested = False


def request() -> None:
    """Record a termination request (the signal handler calls it before raising)."""
    global _requested
    _requested = True


def check() -> None:
    """KeyboardInterrupt if a termination was requested (again, if the first raise was dropped)."""
    if _requested:
        raise KeyboardInterrupt
