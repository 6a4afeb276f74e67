"""Per-video progress of the learned providers: a rewritten line on a terminal, plain lines
(every 10 %) otherwise, on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
  """Counts frames of one step (e.g. "clip.mp4: detector") and reports them."""

  def __init__(self, label: str, total: int, stream=None):
    self.label, self.total, self.done = label, max(1, int(total)), 0
    self.stream = stream or sys.stderr
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.t0 = time.time()
    self._last_tenth = -1

  def update(self, n: int) -> None:
    self.done = min(self.total, self.done + int(n))
    el = time.time() - self.t0
    line = (f"{self.label}: {self.done}/{self.total} frames ({el:.1f} s, "
            f"{self.done / max(el, 1e-9):.2f} frames/s)")
    if self.tty:
      self.stream.write("\r" + line + ("\n" if self.done >= self.total else ""))
      self.stream.flush()
      return
    tenth = self.done * 10 // self.total
    if tenth > self._last_tenth:
      self._last_tenth = tenth
      self.stream.write(line + "\n")
      self.stream.flush()
