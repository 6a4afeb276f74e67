"""SHA-256 of files, read in blocks (weight files, data shards and generated clips)."""

from __future__ import annotations

import hashlib


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
  """Hex SHA-256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
