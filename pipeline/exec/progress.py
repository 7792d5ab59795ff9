"""Progress bars for long stages: rows done and rows/s on stderr, nothing under `--quiet`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tqdm import tqdm

# Rows a batch function handles between two progress reports: a few seconds of the slowest
# encoder on 2 cores, so a bar never stands still for minutes inside one large batch.
TICK_ROWS = 256


def chunks(total: int, size: int, desc: str, enabled: bool) -> Iterator[tuple[slice, Callable[[int], None]]]:
    """Slices of `size` rows over `total` rows, each with a `tick(rows)` the caller may call as it
    finishes part of the slice; whatever was not ticked is added when the slice is done."""
    with tqdm(total=total, desc=desc, unit="rows", disable=not enabled or total == 0, dynamic_ncols=True, mininterval=1.0) as bar:
        for start in range(0, total, size):
            part = slice(start, min(start + size, total))
            ticker = _Ticker(bar, part.stop - part.start)
            yield part, ticker
            ticker(ticker.left)


class _Ticker:
    """Moves the bar by the rows a batch reports, never past the batch's own rows."""

    def __init__(self, bar: tqdm, rows: int):
        self.bar, self.left = bar, rows

    def __call__(self, rows: int) -> None:
        rows = min(rows, self.left)
        self.left -= rows
        self.bar.update(rows)


def in_ticks(n: int, tick: Callable[[int], None] | None, rows: int = TICK_ROWS) -> Iterator[slice]:
    """Slices of `rows` over `n` rows, reporting each one to `tick` once the caller has done it."""
    for start in range(0, n, rows):
        part = slice(start, min(start + rows, n))
        yield part
        if tick is not None:
            tick(part.stop - part.start)
