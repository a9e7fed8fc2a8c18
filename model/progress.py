"""Progress bars that suit a terminal and a log alike.

On a terminal a bar redraws itself in place. Written to a file or a pipe, the same redraws
(a carriage return each) fill the log: there the bar writes one plain line at most every
:data:`LOG_INTERVAL_S` seconds, and its last state when it ends.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

#: Seconds between two progress lines off a terminal.
LOG_INTERVAL_S = 30.0


class _LineWriter:
    """A stream for tqdm off a terminal: each redraw becomes one line, blank redraws none."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, *, enabled: bool = True, **options: Any) -> Any:
    """Return a tqdm bar over ``iterable`` (``options`` go to tqdm), quiet unless ``enabled``."""
    from tqdm import tqdm

    stream = sys.stderr
    if enabled and not stream.isatty():
        options.update(file=_LineWriter(stream), mininterval=LOG_INTERVAL_S,
                       dynamic_ncols=False, ascii=True)
    return tqdm(iterable, disable=not enabled, **options)
