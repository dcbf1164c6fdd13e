"""Path files: the aggregated paths other tools write (ChannelAttribution, a CSV or Parquet with
a joined ``path`` column and counts), read into a :class:`~touchline.attribution.paths.PathSet`.

Read in chunks into Arrow, with each bad row reported by file, line and column.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from touchline.attribution.paths import PATH_SEP_DEFAULT, PathSet
from touchline.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Accepted names of each count column in a path file, first match wins.
COUNT_ALIASES: dict[str, tuple[str, ...]] = {
    "conversions": ("conversions", "total_conversions"),
    "value": ("value", "total_conversion_value"),
    "nulls": ("nulls", "total_null"),
}


def read_path_file(
    file: Path, *, sep: str = PATH_SEP_DEFAULT, path_column: str = "path", level: str = "channel"
) -> PathSet:
    """Read a path file (CSV with ``,`` or ``;``, or Parquet) into a :class:`PathSet`.

    The file has a ``path_column`` of touches joined by ``sep`` and count columns named as in
    :data:`COUNT_ALIASES` (``value`` and ``nulls`` optional). Errors name the file, the line
    (CSV, header = line 1) or row (Parquet), and the column.

    CSV streams through Arrow's reader in blocks with typed count columns, and each block's
    touches become integer codes at once, so memory holds the codes, not the strings; only a
    file that fails there is re-read as text, to find the bad line.
    """
    import pandas as pd

    file = Path(file)
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    if file.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(file)
        frame.columns = [str(c).strip() for c in frame.columns]
        names = _count_columns(file, list(frame.columns), path_column)
        paths = _PathAccumulator(file, sep, path_column, where="row", first_line=1)
        text = frame[path_column].astype(str).where(frame[path_column].notna(), "")
        counts = _checked_counts(file, frame, names, where="row", first_line=1)
        paths.add(pa.array(text, type=pa.string()), counts)
        return paths.build(level)
    delimiter = _sniff_delimiter(file)
    with file.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = [c.strip() for c in next(csv.reader(handle, delimiter=delimiter))]
    names = _count_columns(file, header, path_column)
    paths = _PathAccumulator(file, sep, path_column, where="line", first_line=2)
    try:
        # text cells, in chunks: memory holds one chunk's strings, and a bad count is found
        # with its line number in the same pass
        chunks = pd.read_csv(
            file,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            names=header,
            skiprows=1,
            usecols=[path_column, *names.values()],
            encoding="utf-8-sig",
            chunksize=_CSV_CHUNK_ROWS,
        )
        for chunk in chunks:
            counts = _checked_counts(file, chunk, names, where="line", first_line=2 + paths.rows)
            paths.add(
                pa.array(chunk[path_column].to_numpy(), type=pa.string(), memory_pool=_POOL), counts
            )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: not a readable CSV path file: {exc}") from exc
    return paths.build(level)


def _count_columns(file: Path, columns: list[str], path_column: str) -> dict[str, str]:
    """Canonical count name → the file's column name; errors on a missing column."""
    if path_column not in columns:
        raise InputError(f"{file}: missing column {path_column!r} (columns: {', '.join(columns)})")
    names = {}
    for canonical, aliases in COUNT_ALIASES.items():
        name = next((a for a in aliases if a in columns), None)
        if name is not None:
            names[canonical] = name
        elif canonical == "conversions":
            raise InputError(
                f"{file}: missing column 'conversions' (or 'total_conversions'); "
                f"columns: {', '.join(columns)}"
            )
    return names


_CSV_CHUNK_ROWS = 50_000
# Arrow's default allocator (mimalloc) keeps freed blocks in per-thread heaps; splitting path
# strings block by block through the system allocator keeps the peak near the final arrays.
_POOL = pa.system_memory_pool()


def _checked_counts(
    file: Path, frame: pd.DataFrame, names: dict[str, str], *, where: str, first_line: int
) -> dict[str, np.ndarray]:
    """Numbers of each count column, or an error naming the first bad cell."""
    import pandas as pd

    counts: dict[str, np.ndarray] = {}
    for canonical, name in names.items():
        raw = frame[name]
        text = raw.astype(str).str.strip() if raw.dtype == object else raw
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        if raw.dtype == object:
            numbers[(text == "").to_numpy()] = 0.0
        bad = np.flatnonzero(~np.isfinite(numbers))
        if len(bad):
            i = int(bad[0])
            raise InputError(
                f"{file}: {where} {i + first_line}: column {name!r}: "
                f"{raw.iloc[i]!r} is not a number"
            )
        negative = np.flatnonzero(numbers < 0)
        if len(negative):
            i = int(negative[0])
            raise InputError(
                f"{file}: {where} {i + first_line}: column {name!r}: negative count {raw.iloc[i]!r}"
            )
        counts[canonical] = numbers
    return counts


class _PathAccumulator:
    """Joined paths in, block by block, as integer codes against one growing vocabulary."""

    def __init__(
        self, file: Path, sep: str, path_column: str, *, where: str, first_line: int
    ) -> None:
        self.file, self.sep, self.path_column = file, sep, path_column
        self.where, self.first_line = where, first_line
        self.vocabulary: dict[str, int] = {}
        self.codes: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.counts: dict[str, list[np.ndarray]] = {}
        self.rows = 0

    def add(self, text: pa.Array, counts: dict[str, np.ndarray]) -> None:
        """Split one block of joined paths (vectorised in Arrow) and keep its codes."""
        # split on the separator's visible part, then trim: 'A>B' and 'A >  B' read as ' > '
        pattern = self.sep.strip() or self.sep
        split = pc.split_pattern(text, pattern=pattern, memory_pool=_POOL)
        flat = pc.list_flatten(split, memory_pool=_POOL)
        if pattern != self.sep:
            flat = pc.utf8_trim_whitespace(flat, memory_pool=_POOL)
        lengths = pc.list_value_length(split, memory_pool=_POOL).to_numpy(zero_copy_only=False)
        lengths = lengths.astype(np.int64)
        empty = pc.equal(flat, "", memory_pool=_POOL).to_numpy(zero_copy_only=False)
        if empty.any():
            i = int(np.repeat(np.arange(len(text)), lengths)[np.flatnonzero(empty)[0]])
            raw_path = text[i].as_py()
            what = "empty path" if not raw_path.strip() else f"empty touch in path {raw_path!r}"
            raise InputError(
                f"{self.file}: {self.where} {self.rows + i + self.first_line}: "
                f"column {self.path_column!r}: {what}"
            )
        encoded = pc.dictionary_encode(flat, memory_pool=_POOL)
        local = np.array(
            [
                self.vocabulary.setdefault(label, len(self.vocabulary))
                for label in encoded.dictionary.to_pylist()
            ],
            np.int64,
        )
        self.codes.append(local[encoded.indices.to_numpy(zero_copy_only=False)])
        self.lengths.append(lengths)
        for name, values in counts.items():
            self.counts.setdefault(name, []).append(values)
        self.rows += len(text)

    def build(self, level: str) -> PathSet:
        """The :class:`PathSet`, labels sorted."""
        labels = np.array(list(self.vocabulary), dtype=object)
        order = np.argsort(labels, kind="stable")
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        codes = rank[np.concatenate(self.codes)] if self.codes else np.zeros(0, np.int64)

        def column(name: str) -> np.ndarray:
            parts = self.counts.get(name)
            return np.concatenate(parts) if parts else np.zeros(len(lengths))

        n = len(lengths)
        paths = PathSet(
            labels=labels[order],
            offsets=offsets,
            codes=codes,
            conversions=column("conversions"),
            value=column("value"),
            nulls=column("nulls"),
            lead_position=np.full(n, -1, np.int64),
            opportunity_position=np.full(n, -1, np.int64),
            level=level,
        )
        log.info("read %d distinct paths from %s", paths.n_paths, self.file)
        return paths


def _sniff_delimiter(file: Path) -> str:
    """``;`` if the header has more semicolons than commas, else ``,``."""
    with file.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    if not header.strip():
        raise InputError(f"{file}: empty file (expected a header with a 'path' column)")
    try:
        return csv.Sniffer().sniff(header, delimiters=",;").delimiter
    except csv.Error:
        return ";" if header.count(";") > header.count(",") else ","


