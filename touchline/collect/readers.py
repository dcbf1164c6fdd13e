"""Streaming readers for input files: CSV, NDJSON and Parquet, plain or gzip-compressed.

Each reader yields :class:`Chunk` s of at most ``chunk_rows`` records, so memory does not grow
with the file. Every record keeps its 1-based physical line number (CSV, NDJSON; the line a
quoted multi-line CSV record starts on) or row number (Parquet), and its raw text, so that a
record rejected later can be traced to file, line and field. Records that cannot even be split
into fields (a CSV row with the wrong number of fields, undecodable bytes, a line longer than
``max_line_bytes``) are returned as :class:`Reject` s of the chunk; nothing is skipped silently
except blank lines, which hold no record.

Whole-file problems (empty file, missing header, a ``.gz`` name on bytes that are not gzip,
truncated gzip, not a Parquet file) raise :class:`~touchline.errors.InputError` naming the file
and, where known, the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from touchline.errors import InputError
from touchline.store import cut_text

GZIP_MAGIC = b"\x1f\x8b"
GZIP_SUFFIXES = (".gz", ".gzip")
RAW_KEEP_BYTES = 64 * 1024  # raw text kept in rejects
FORMATS = ("csv", "ndjson", "parquet")


@dataclass(frozen=True)
class Reject:
    """A record that could not be split into fields."""

    line: int
    reason_code: str
    reason: str
    raw: str
    field: str | None = None


@dataclass
class Chunk:
    """Up to ``chunk_rows`` records: string (or typed, for Parquet) columns, lines, raw text."""

    table: pa.Table
    lines: np.ndarray
    raw: pa.Array | pa.ChunkedArray
    rejects: list[Reject] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """``csv``, ``ndjson`` or ``parquet`` from the name (``.csv.gz``, ``.jsonl``, ...)."""
    name = path.name.lower().removesuffix(".gz").removesuffix(".gzip")
    if name.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise InputError(
        f"{path}: cannot tell the format from the name; use a .csv, .ndjson/.jsonl or .parquet "
        "name (optionally .gz) or pass --format"
    )


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes): nothing to ingest")
    handle = path.open("rb")
    magic = handle.read(2)
    handle.seek(0)
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    if path.suffix.lower() in GZIP_SUFFIXES:
        handle.close()
        raise InputError(
            f"{path}: is named {path.suffix} but is not gzip-compressed (it does not start with "
            "gzip's bytes 1f 8b); compress it with gzip, or drop the suffix if it is plain text"
        )
    return handle  # type: ignore[return-value]


def _bounded_lines(
    stream: io.BufferedIOBase, path: Path, max_line_bytes: int, too_long: dict[int, bytes]
) -> Iterator[bytes]:
    """Yield physical lines with their line ending, never holding more than ``max_line_bytes``.

    The ending stays so that a quoted CSV field spanning lines keeps its newline. A longer line
    is consumed in pieces and replaced by an empty line; its number and its first bytes
    (:func:`_head`) go into ``too_long`` so the caller can reject it.
    """
    number = 0
    try:
        while True:
            line = stream.readline(max_line_bytes + 1)
            if not line:
                return
            number += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while True:  # skip the rest of the overlong line without keeping it
                    rest = stream.readline(1 << 20)
                    if not rest or rest.endswith(b"\n"):
                        break
                too_long[number] = _head(line, max_line_bytes)
                yield b""
                continue
            yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{path}: compressed data is truncated or corrupt after line {number} ({exc}); "
            "nothing from this file was loaded"
        ) from None


#: bytes of an overlong line kept for its reject (room left for the marker)
HEAD_BYTES = RAW_KEEP_BYTES - 256


def _head(line: bytes, max_line_bytes: int) -> bytes:
    """The first bytes of an overlong line (no more than the limit it broke), all that is
    kept of it."""
    return line[:min(HEAD_BYTES, max_line_bytes)]


def _too_long(line: int, max_line_bytes: int, head: bytes = b"") -> Reject:
    """An overlong line's reject: its start as written (a character cut in two dropped), and a
    marker saying the rest is not kept."""
    text = head.decode("utf-8", errors="ignore").rstrip("\r\n")
    return Reject(
        line,
        "line_too_long",
        f"line is longer than the {max_line_bytes:,}-byte limit (settings.max_line_bytes)",
        f"{text} … [cut: the line is longer than {max_line_bytes:,} bytes]",
    )


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def iter_csv(
    path: Path, *, chunk_rows: int, max_line_bytes: int, delimiter: str | None = None
) -> Iterator[Chunk]:
    """CSV with a header row; all values come back as strings (typed later, with reasons).

    A quoted field may span lines: it keeps its line breaks as written (``\n`` or ``\r\n``).

    The delimiter (comma, semicolon, tab or pipe) is sniffed from the header unless given.
    A UTF-8 byte-order mark is dropped. Lines with bytes that are not UTF-8 are rejected as
    ``invalid_encoding`` (convert the file, e.g. ``iconv -f latin1 -t utf-8``).
    """
    too_long: dict[int, bytes] = {}
    stream = _open_binary(path)
    lines = _bounded_lines(stream, path, max_line_bytes, too_long)
    bad_encoding: set[int] = set()
    state = {"n": 0}
    # the physical lines the reader took since its last record: a record's text as written
    # (quotes and line breaks kept), for its reject
    taken: list[str] = []

    def text_lines() -> Iterator[str]:
        for raw in lines:
            state["n"] += 1
            text, ok = _decode(raw)
            if not ok:
                bad_encoding.add(state["n"])
            if state["n"] == 1:
                text = text.removeprefix("\ufeff")
            taken.append(text)
            yield text

    def written() -> str:
        record = "".join(taken).rstrip("\r\n")
        taken.clear()
        return cut_text(record, RAW_KEEP_BYTES)

    text = text_lines()
    header_line = next(text, None)
    while header_line is not None and not header_line.strip():
        header_line = next(text, None)
    if header_line is None:
        raise InputError(f"{path}: has no header line (only blank lines)")
    if delimiter is None:
        counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
        delimiter = max(counts, key=counts.__getitem__) if any(counts.values()) else ","
    header = next(csv.reader([header_line], delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or any(not h for h in header):
        dupes = sorted({h for h in header if header.count(h) > 1 or not h})
        raise InputError(f"{path}: line 1: header has empty or repeated column names: {dupes}")
    width = len(header)
    csv.field_size_limit(max_line_bytes)
    reader = csv.reader(text, delimiter=delimiter, strict=False)
    taken.clear()  # the header's lines
    rows: list[list[str]] = []
    raws: list[str] = []
    row_lines: list[int] = []
    rejects: list[Reject] = []
    last_line = state["n"]
    emitted = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            start = last_line + 1
            last_line = state["n"]
            rejects.append(Reject(start, "malformed_csv", f"CSV syntax error: {exc}",
                                  written()))
            continue
        start, last_line = last_line + 1, state["n"]
        record = written()
        span = range(start, last_line + 1)
        if any(n in too_long for n in span):
            rejects.append(_too_long(start, max_line_bytes,
                                     next(too_long[n] for n in span if n in too_long)))
        elif not row or (len(row) == 1 and not row[0].strip() and width > 1):
            pass  # a blank line holds no record
        elif any(n in bad_encoding for n in span):
            rejects.append(
                Reject(start, "invalid_encoding", "line has bytes that are not valid UTF-8",
                       record)
            )
        elif len(row) != width:
            rejects.append(
                Reject(
                    start,
                    "wrong_field_count",
                    f"expected {width} fields as in the header, found {len(row)}",
                    record,
                )
            )
        else:
            rows.append(row)
            raws.append(record)
            row_lines.append(start)
        if len(rows) >= chunk_rows:
            yield _csv_chunk(header, rows, row_lines, rejects, raws)
            rows, row_lines, rejects, raws, emitted = [], [], [], [], True
    if rows or rejects or not emitted:
        # a file of only a header still yields one (empty) chunk: its header gets checked
        yield _csv_chunk(header, rows, row_lines, rejects, raws)


def _csv_chunk(
    header: list[str], rows: list[list[str]], lines: list[int], rejects: list[Reject],
    raws: list[str],
) -> Chunk:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    arrays = [pa.array(col, type=pa.string()) for col in columns]
    table = pa.Table.from_arrays(arrays, names=header)
    # empty strings are missing values in CSV exports
    table = pa.Table.from_arrays(
        [pa.compute.if_else(pa.compute.equal(c, ""), None, c) for c in table.columns],
        names=header,
    )
    raw = pa.array(raws, type=pa.string())  # each record as written
    return Chunk(table, np.asarray(lines, dtype=np.int64), raw, rejects)


UTF8_BOM = b"\xef\xbb\xbf"
BLOCK_BYTES = 8 << 20  # NDJSON is read in blocks of this size and split into lines in C


def _line_blocks(
    stream: io.BufferedIOBase, path: Path, max_line_bytes: int
) -> Iterator[tuple[int, pa.Array, dict[int, bytes]]]:
    """``(number of the first line, lines, overlong lines' numbers → first bytes)`` per block
    read.

    Lines are a binary array without their ``\\n``; an overlong line is an empty slot and its
    number is listed with its first bytes (:func:`_head`), and at most ``max_line_bytes`` of
    it (plus one block) is ever held.
    The lines are cut from the block's own buffer at its newlines (found by numpy): no Python
    object per line.
    """
    number = 0  # lines emitted so far
    carry = b""
    skipping = False  # inside an overlong line
    head = b""  # the first bytes of the overlong line being skipped
    first = True
    try:
        while True:
            block = stream.read(BLOCK_BYTES)
            if not block:
                break
            if first:  # a byte-order mark (editors on Windows write one) is not line 1's text
                while len(block) < len(UTF8_BOM) and UTF8_BOM.startswith(block):
                    more = stream.read(len(UTF8_BOM) - len(block))  # a mark cut by a short read
                    if not more:
                        break
                    block += more
                block, first = block.removeprefix(UTF8_BOM), False
            if skipping:
                cut = block.find(b"\n")
                if cut < 0:
                    continue
                block, skipping = block[cut + 1 :], False
                number += 1
                yield number, pa.array([b""], pa.binary()), {number: head}
            data = carry + block if carry else block
            end = data.rfind(b"\n")
            if end < 0:
                carry = data
            else:
                lines, long = _cut_lines(data, end + 1, max_line_bytes)
                carry = data[end + 1 :]
                yield number + 1, lines, {number + 1 + i: h for i, h in long.items()}
                number += len(lines)
            if len(carry) > max_line_bytes:
                carry, skipping, head = b"", True, _head(carry, max_line_bytes)
        if skipping or carry:
            number += 1
            yield number, pa.array([b"" if skipping else carry], pa.binary()), (
                {number: head} if skipping else {})
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(
            f"{path}: compressed data is truncated or corrupt after line {number} ({exc}); "
            "nothing from this file was loaded"
        ) from None


def _cut_lines(data: bytes, size: int, max_line_bytes: int
               ) -> tuple[pa.Array, dict[int, bytes]]:
    """The lines of ``data[:size]`` (which ends with a newline), without their ``\\n``, and
    the indexes of those longer than ``max_line_bytes`` (emptied) with their first bytes."""
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, count=size) == 10)
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends + 1
    with_newline = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    lines = pc.binary_slice(with_newline, 0, -1).cast(pa.binary())
    long = np.flatnonzero(np.diff(offsets) - 1 > max_line_bytes)
    if len(long):
        mask = np.zeros(len(ends), dtype=bool)
        mask[long] = True
        lines = pc.if_else(pa.array(mask), pa.scalar(b"", pa.binary()), lines)
    return lines, {i: _head(data[offsets[i]:offsets[i + 1] - 1], max_line_bytes)
                   for i in long.tolist()}


def _decoded(lines: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """UTF-8 text of ``lines`` (``\\r`` endings dropped) and a mask of the lines that were valid."""
    try:
        text = lines.cast(pa.string())
        valid = np.ones(len(lines), dtype=bool)
    except pa.ArrowInvalid:  # some line is not UTF-8: decode one by one (rare)
        pairs = [_decode(line) for line in lines.to_pylist()]
        text = pa.array([t for t, _ in pairs], type=pa.string())
        valid = np.array([ok for _, ok in pairs], dtype=bool)
    if pc.any(pc.ends_with(text, "\r")).as_py():  # a copy only for CRLF files
        text = pc.utf8_rtrim(text, characters="\r")
    return text, valid


def iter_ndjson(path: Path, *, chunk_rows: int, max_line_bytes: int) -> Iterator[Chunk]:
    """Newline-delimited JSON: one record a line; the table has one ``line`` text column.

    Read in blocks and split in C (no Python work per line); JSON parsing and field extraction
    happen later, in the engine, on the whole chunk. Blank lines hold no record.
    """
    stream = _open_binary(path)
    texts: list[pa.Array] = []
    numbers: list[np.ndarray] = []
    rejects: list[Reject] = []
    held = 0
    for first, lines, long in _line_blocks(stream, path, max_line_bytes):
        text, valid = _decoded(lines)
        numbered = np.arange(first, first + len(lines), dtype=np.int64)
        # blank: empty or only ASCII whitespace (tested in place, no trimmed copy)
        filled = ~(pc.equal(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
                   | pc.ascii_is_space(text).to_numpy(zero_copy_only=False))
        rejects += [_too_long(n, max_line_bytes, h) for n, h in long.items()]
        for i in np.nonzero(filled & ~valid)[0]:
            rejects.append(Reject(int(numbered[i]), "invalid_encoding",
                                  "line has bytes that are not valid UTF-8",
                                  text[int(i)].as_py()[:RAW_KEEP_BYTES]))
        keep = filled & valid
        texts.append(text if keep.all() else text.filter(pa.array(keep)))
        numbers.append(numbered[keep])
        held += int(keep.sum())
        if held >= chunk_rows:
            yield from _line_chunks(texts, numbers, rejects, chunk_rows)
            texts, numbers, rejects, held = [], [], [], 0
    if held or rejects:
        yield from _line_chunks(texts, numbers, rejects, chunk_rows)


def _line_chunks(texts: list[pa.Array], numbers: list[np.ndarray], rejects: list[Reject],
                 chunk_rows: int) -> Iterator[Chunk]:
    """The held lines as chunks of at most ``chunk_rows`` (rejects go with the first)."""
    text = pa.chunked_array(texts, type=pa.string())  # sliced below without a copy
    lines = np.concatenate(numbers) if numbers else np.zeros(0, dtype=np.int64)
    for lo in range(0, max(len(text), 1), chunk_rows):
        part = text.slice(lo, chunk_rows)
        yield Chunk(pa.table({"line": part}), lines[lo : lo + chunk_rows], part,
                    rejects if lo == 0 else [])


def parquet_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a Parquet file, or :class:`InputError` if it is not one."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return pq.read_schema(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise InputError(f"{path}: is not a readable Parquet file ({exc})") from None


def iter_parquet(path: Path, *, chunk_rows: int) -> Iterator[Chunk]:
    """Parquet row groups in batches; ``lines`` are 1-based row numbers."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise InputError(f"{path}: is not a readable Parquet file ({exc})") from None
    offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            table = pa.Table.from_batches([batch])
            lines = np.arange(offset + 1, offset + table.num_rows + 1, dtype=np.int64)
            offset += table.num_rows
            yield Chunk(table, lines, pa.nulls(table.num_rows, pa.string()))
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"{path}: Parquet data is corrupt after row {offset} ({exc}); "
            "nothing from this file was loaded"
        ) from None


def iter_chunks(
    path: Path, fmt: str, *, chunk_rows: int, max_line_bytes: int
) -> Iterator[Chunk]:
    """Dispatch on format; see the readers above."""
    if fmt == "csv":
        return iter_csv(path, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes)
    if fmt == "ndjson":
        return iter_ndjson(path, chunk_rows=chunk_rows, max_line_bytes=max_line_bytes)
    if fmt == "parquet":
        return iter_parquet(path, chunk_rows=chunk_rows)
    raise InputError(f"{path}: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
