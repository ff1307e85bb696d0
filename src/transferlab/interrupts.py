"""Ctrl-C (SIGINT) for every process that logs to MLflow: stages, sweeps, tuning workers.

Python raises KeyboardInterrupt wherever the main thread is. Landing inside a SQLAlchemy
transaction of MLflow's (or Optuna's) sqlite store, it can leave that connection holding the
database's write lock until the interrupted frames are freed, and the runs closed on the way out
then wait sqlite's 20 s busy timeout and stay RUNNING. Landing inside a finalizer (`__del__`, run
by the garbage collector wherever it happens to be), it is printed with a traceback and dropped. So
a first Ctrl-C that lands inside database code or a finalizer is delivered again as soon as the
main thread is out of it; a second Ctrl-C is not deferred.
"""

from __future__ import annotations

import signal
import sys
import threading

interrupts: list[int] = []  # Ctrl-C seen by this process (see on_interrupt)
# Code a KeyboardInterrupt must not cut: the database drivers and the stores' sessions around them.
DATABASE_MODULES = ("sqlalchemy", "sqlite3", "alembic", "mlflow.store", "optuna.storages")
POLL_SECONDS = 0.005
_redelivered = threading.Event()
_pending: list[threading.Event] = []  # set one to cancel its delivery


def install() -> None:
    """Make on_interrupt this process's SIGINT handler (main thread only, as `signal` requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)


def on_interrupt(signum, frame) -> None:
    """SIGINT handler: raise KeyboardInterrupt as Python's does, and remember it. A
    KeyboardInterrupt raised inside a finalizer (`__del__`, a weakref callback) is printed and
    dropped by Python, so a Ctrl-C during training could let a sweep finish with exit code 0;
    remembered, it stops the next job and makes the exit code 130 whatever happened to it."""
    if _redelivered.is_set():
        _redelivered.clear()
    else:
        interrupts.append(signum)
    while _pending:  # this delivery replaces any scheduled one
        _pending.pop().set()
    if len(interrupts) == 1 and in_uninterruptible_code(frame):
        _deliver_later(signum)
        return
    raise KeyboardInterrupt


def in_uninterruptible_code(frame) -> bool:
    """Whether `frame` or a frame that called it belongs to DATABASE_MODULES or is a finalizer:
    a `__del__`, or a `weakref.finalize` callback (tempfile.TemporaryDirectory's cleanup)."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if any(name == module or name.startswith(module + ".") for module in DATABASE_MODULES):
            return True
        if frame.f_code.co_name == "__del__" or (name == "weakref" and frame.f_code.co_name == "__call__"):
            return True
        frame = frame.f_back
    return False


def _deliver_later(signum: int) -> None:
    """Watch the main thread's stack from another thread; deliver the signal again once it is out
    of database code and finalizers (the handler itself runs only when a C call such as sqlite's
    returns, so it would almost always find itself inside one)."""
    main = threading.main_thread().ident
    cancelled = threading.Event()

    def deliver() -> None:
        while not cancelled.wait(POLL_SECONDS):
            if not in_uninterruptible_code(sys._current_frames().get(main)):
                _redelivered.set()
                signal.pthread_kill(main, signum)  # a real signal: it also ends a sleep or a wait
                return

    _pending.append(cancelled)
    threading.Thread(target=deliver, name="deliver-ctrl-c", daemon=True).start()
