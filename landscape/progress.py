"""Progress reporting shared by the CLI (tqdm bar) and the dashboard (st.progress).

Long functions take ``progress: Progress | None`` and call ``progress(done, total, stage)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

__all__ = ["Progress", "terminal_progress"]

Progress = Callable[[int, int, str], None]


@contextmanager
def terminal_progress(desc: str = "") -> Iterator[Progress]:
    """A tqdm bar on stderr driven through the :data:`Progress` callback protocol."""
    bar: tqdm | None = None
    stage = None

    def update(done: int, total: int, text: str) -> None:
        nonlocal bar, stage
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, mininterval=0.2)
        if text != stage:
            bar.set_description(f"{desc} {text}".strip(), refresh=False)
            stage = text
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
