"""Progress bars for long stages: rows done and rows/s on stderr, nothing under `--quiet`."""
from __future__ import annotations

from collections.abc import Iterator

from tqdm import tqdm


def chunks(total: int, size: int, desc: str, enabled: bool) -> Iterator[slice]:
    """Slices of `size` rows over `total` rows; the bar advances by each slice's rows once the
    caller has finished it."""
    with tqdm(total=total, desc=desc, unit="rows", disable=not enabled or total == 0,
              dynamic_ncols=True, mininterval=1.0) as bar:
        for start in range(0, total, size):
            part = slice(start, min(start + size, total))
            yield part
            bar.update(part.stop - part.start)
