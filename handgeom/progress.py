"""A dependency-free progress bar for handgeom's long-running commands (training, the demo)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar, TextIO

T = TypeVar("T")


class Progress:
    """Iterates ``iterable`` while drawing ``desc  37/200 [####......] 12.3s  loss 0.12`` on one
    line of ``stream`` (redrawn in place on a terminal; in logs, a line per 25% and one at the
    end). ``set(**stats)`` updates the numbers shown."""

    def __init__(self, iterable: Iterable[T], total: int, desc: str = "", stream: TextIO | None = None):
        self.iterable, self.total, self.desc = iterable, total, desc
        self.stream = stream if stream is not None else sys.stderr
        self.stats: dict[str, float] = {}
        self._tty = self.stream.isatty()

    def set(self, **stats: float) -> None:
        self.stats.update(stats)

    def __iter__(self) -> Iterator[T]:
        start, last_draw, next_log = time.perf_counter(), 0.0, 0.25
        done = 0
        for done, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if self._tty and (now - last_draw > 0.1 or done == self.total):
                self._draw(done, now - start)
                last_draw = now
            elif not self._tty and done >= next_log * self.total:
                self._draw(done, now - start)
                next_log += 0.25
        if self._tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, done: int, seconds: float) -> None:
        filled = int(20 * done / max(self.total, 1))
        stats = "  ".join(f"{k} {v:.4g}" for k, v in self.stats.items())
        line = f"{self.desc} {done}/{self.total} [{'#' * filled}{'.' * (20 - filled)}] {seconds:.1f}s  {stats}"
        self.stream.write(f"\r{line:<100}" if self._tty else line + "\n")
        self.stream.flush()
