"""Worker processes of the synthetic build, and how they stop.

:func:`imap` maps a function over spawned worker processes (safe when JAX is already imported).
A SIGTERM to the building process logs one line and ends it with status 143 after stopping the
workers; a worker whose parent is gone (killed with SIGKILL, say) exits at once and silently
instead of failing to send its result (a ``BrokenPipeError`` traceback per worker). Ctrl-C
reaches the parent only, which stops the workers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

STOP_STATUS = 128 + signal.SIGTERM


class Stopped(SystemExit):
  """Raised in the main thread by SIGTERM while :func:`stop_on_sigterm` is active."""


def _exit_when_parent_exits() -> None:
  parent = multiprocessing.parent_process()
  if parent is None:
    return

  def wait():
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(STOP_STATUS)  # pylint: disable=protected-access  # no result can be delivered

  threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _init_worker() -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
  _exit_when_parent_exits()


@contextlib.contextmanager
def stop_on_sigterm(doing: str, after: str) -> Iterator[None]:
  """While the block runs, SIGTERM logs ``Stopped by SIGTERM while <doing>; <after>`` and raises
  :class:`Stopped` (status 143) in the main thread, so that ``with`` blocks around it (worker
  pools, TFDS's incomplete directories) clean up. A handler installed before is called first;
  an ignored SIGTERM stays ignored. Outside the main thread this does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.getsignal(signal.SIGTERM)
  if previous == signal.SIG_IGN:
    yield
    return

  def handler(signum, frame):
    if callable(previous):
      previous(signum, frame)
    logging.warning("Stopped by SIGTERM while %s; %s", doing, after)
    raise Stopped(STOP_STATUS)

  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def imap(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, *, ordered: bool = True,
         chunksize: int = 1) -> Iterator[Any]:
  """``map(fn, items)`` in ``workers`` spawned processes (in this one when ``workers <= 1``),
  streamed in order (or as finished with ``ordered=False``)."""
  if workers <= 1:
    yield from map(fn, items)
    return
  with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
    run = pool.imap if ordered else pool.imap_unordered
    yield from run(fn, items, chunksize=chunksize)
