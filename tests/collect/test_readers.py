"""The block-wise NDJSON reader against a line-by-line model, at every block boundary."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from touchline.collect import readers
from touchline.errors import InputError

MAX_LINE = 12

line_bytes = st.one_of(
    st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"", b"  ", b"\r", b'{"a":1}', b'{"a":1}\r', b"\xff\xfe", b"x" * 13,
                     readers.UTF8_BOM, readers.UTF8_BOM + b'{"a":1}']),
    st.text(max_size=8).map(lambda t: t.replace("\n", "").encode()),
)


def model(data: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """What a line-by-line reader returns: records and rejects, each with its line number."""
    records, rejects = [], []
    # a byte-order mark opening the file is no text of line 1 (editors on Windows write one)
    lines = data.removeprefix(readers.UTF8_BOM).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line; it does not start another
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE:
            rejects.append((number, "line_too_long"))
        elif raw.strip():
            try:
                records.append((number, raw.decode("utf-8").rstrip("\r")))
            except UnicodeDecodeError:
                rejects.append((number, "invalid_encoding"))
    return records, rejects


def read(path: Path, chunk_rows: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    records, rejects = [], []
    for chunk in readers.iter_ndjson(path, chunk_rows=chunk_rows, max_line_bytes=MAX_LINE):
        assert chunk.table.num_rows <= chunk_rows
        records += list(zip(chunk.lines.tolist(), chunk.table.column("line").to_pylist(),
                            strict=True))
        rejects += [(r.line, r.reason_code) for r in chunk.rejects]
    return records, sorted(rejects)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line_bytes, min_size=1, max_size=30), newline=st.booleans(),
       block=st.integers(1, 40), chunk_rows=st.integers(1, 7), gz=st.booleans())
# a file that is only a byte-order mark (found by Hypothesis), and a mark cut by short reads
@example(lines=[readers.UTF8_BOM], newline=False, block=40, chunk_rows=1, gz=False)
@example(lines=[readers.UTF8_BOM + b'{"a":1}', b"x"], newline=True, block=2, chunk_rows=1,
         gz=False)
@example(lines=[readers.UTF8_BOM + b'{"a":1}'], newline=False, block=1, chunk_rows=2, gz=True)
def test_block_reader_matches_a_line_by_line_reader(
    lines: list[bytes], newline: bool, block: int, chunk_rows: int, gz: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if newline else b"")
    if not data:
        return  # an empty file is an InputError, tested with the ingest files
    # a file that starts with gzip's magic bytes is read as gzip whatever its name (by design:
    # exports are often gzipped without .gz); such bytes are never the start of JSON text
    assume(gz or not data.startswith(readers.GZIP_MAGIC))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("e.ndjson.gz" if gz else "e.ndjson")
        path.write_bytes(gzip.compress(data) if gz else data)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(readers, "BLOCK_BYTES", block)
            got = read(path, chunk_rows)
    expected_records, expected_rejects = model(data)
    assert got == (expected_records, sorted(expected_rejects))


def test_truncated_gzip_names_the_last_good_line(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n' * 50_000)[:-40])
    with pytest.raises(InputError, match="truncated or corrupt after line"):
        list(readers.iter_ndjson(path, chunk_rows=1000, max_line_bytes=1024))
