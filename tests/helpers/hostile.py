"""Files that run code when loaded carelessly, for the tests of the readers that must not.

Each payload, if it ever runs, writes ``marker``; a test passes such a file to a reader and
checks that the reader refused it with a message naming the file and that ``marker`` is absent.
"""
import os
import pickle

import numpy as np


class WritesMarker:
  """Unpickles as ``os.system("echo ran > marker")``."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f"echo ran > '{self.marker}'",))


class EvalsMarker:
  """Unpickles as ``eval(...)`` writing ``marker`` (a builtin, not an os call)."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (eval, (f"open({self.marker!r}, 'w').write('ran')",))


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=protocol)
  return str(path)


def hostile_pickle(path, marker, wrap=lambda payload: payload, payload_cls=WritesMarker):
  """A pickle whose content is ``wrap(payload)`` (the payload may hide inside plain data)."""
  return write_pickle(path, wrap(payload_cls(marker)))


def hostile_npy(path, marker):
  """An .npy object array holding the payload (np.load(allow_pickle=True) would run it)."""
  np.save(path, np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
  return str(path)


def hostile_npz(path, marker):
  np.savez(path, ok=np.ones(3, np.float32),
           bad=np.array([WritesMarker(marker)], dtype=object))
  return str(path)


def hostile_torch(path, marker):
  """A torch.save file with the payload among tensors (torch.load(weights_only=False) runs it)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.save({"weight": torch.ones(2), "bias": WritesMarker(marker)}, path)
  return str(path)


def assert_nothing_ran(marker):
  assert not os.path.exists(marker), f"the payload ran: {marker} was written"
