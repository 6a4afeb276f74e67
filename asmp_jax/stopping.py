"""A clean stop on SIGTERM (preemption, ``kill``), at any stage of a run.

:func:`install` sets the handler once, as early as possible. Before the training loop runs (data
build, restore, compilation), SIGTERM raises :class:`Stopped` where the program is, which unwinds
to :func:`asmp_jax.train.train_and_evaluate`: nothing has been saved yet that a rerun could not
redo, so the run ends with a message and exit status 0. Once the loop runs (:func:`defer`), SIGTERM
only sets a flag; the loop then saves a checkpoint at the next step boundary and stops. After the
loop has saved its last checkpoint (:func:`undefer`), SIGTERM raises again: the final evaluation
is stopped where it is, since a rerun restores that checkpoint and evaluates it from the start.
"""

from __future__ import annotations

import logging
import signal
import threading


class Stopped(BaseException):  # not an Exception: no ``except Exception`` may swallow it
  """SIGTERM arrived before the training loop ran."""


class _State:
  installed = False
  deferred = False
  requested = False
  stage = "start-up"


_STATE = _State()


def _handler(signum, frame):  # pylint: disable=unused-argument
  _STATE.requested = True
  if _STATE.deferred:
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary.")
  else:
    raise Stopped(_STATE.stage)


def install() -> None:
  """Handles SIGTERM from now on (main thread only; a no-op elsewhere and when done already)."""
  if _STATE.installed or threading.current_thread() is not threading.main_thread():
    return
  signal.signal(signal.SIGTERM, _handler)
  _STATE.installed = True


def stage(name: str) -> None:
  """Names what the run is doing, for the message of a stop during start-up."""
  _STATE.stage = name
  if _STATE.requested and not _STATE.deferred:  # a signal that came before install() finished
    raise Stopped(name)


def defer() -> None:
  """From now on SIGTERM only sets the flag :func:`requested` reads."""
  _STATE.deferred = True


def undefer(name: str) -> None:
  """From now on SIGTERM raises :class:`Stopped` again, naming ``name`` (after the training loop's
  last checkpoint is saved); raises at once if SIGTERM arrived in between."""
  _STATE.deferred = False
  stage(name)


def reset() -> None:
  """Back to start-up mode with no request (at the end of a run, for the next one in-process)."""
  _STATE.deferred = False
  _STATE.requested = False
  _STATE.stage = "start-up"


def requested(process_count: int = 1) -> bool:
  """True once SIGTERM arrived; with several processes, on every process once any got it (so all
  save the same step)."""
  if process_count == 1:
    return _STATE.requested
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray(_STATE.requested, np.int32))
  return bool(np.any(flags))
