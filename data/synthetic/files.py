"""Deterministic, atomic writers for the sidecar files (.npz and .json) and file hashing.

``numpy.savez_compressed`` stamps each member with the current time, so two runs give different
bytes; :func:`write_npz` writes the same format (a zip of ``.npy`` members, readable with
``numpy.load``) with a fixed timestamp and member order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from asmp_jax import files as file_records

_EPOCH = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path next to ``path``; renames it onto ``path`` if the block succeeds."""
  directory = os.path.dirname(os.path.abspath(path)) or "."
  base = os.path.basename(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
  os.close(fd)
  try:
    yield tmp
    set_default_mode(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def set_default_mode(path: str) -> None:
  """Gives ``path`` the permissions of a newly created file (0o666 minus the umask).

  ``tempfile.mkstemp`` (used by atomic writers) creates files readable only by their owner.
  """
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def write_npz(path: str, arrays: Mapping[str, np.ndarray], compresslevel: int = 1) -> None:
  """Writes ``arrays`` as a deflate-compressed .npz with byte-identical output for equal input.

  Args:
    path: destination (written atomically).
    arrays: name -> array, stored in this order (names without the .npy suffix).
    compresslevel: zlib level (1 = fast; the depth/flow maps compress well anyway).
  """
  with atomic_path(path) as tmp:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=compresslevel) as zf:
      for name, value in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
        info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, buf.getvalue(), compresslevel=compresslevel)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON (keys in insertion order), atomically, with a newline."""
  text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


sha256 = file_records.sha256_file
