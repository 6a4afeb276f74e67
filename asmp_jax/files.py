"""Small file records: the SHA-256 of a file, and a JSON object read back (or None)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  """Hex SHA-256 of a file's bytes (weight files, data shards, generated clips)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
  """The JSON object stored at ``path``; None when it is missing, unreadable or not an object."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None
