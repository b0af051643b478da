"""Reading a resource's raw pages into one flat pandas frame, fast.

Arrow parses each page in one call (a million records take seconds and hundreds of MB, where
Python dicts took a minute and gigabytes); nested objects become dotted column names, as
`pd.json_normalize` names them. Every record keeps its stored line as `_rawData` and its
sub-folder as `_partition` (e.g. the scan stage).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from sysdig_j1.hooks.storage import RunStorage


def read_raw(storage: RunStorage, resource: str) -> pd.DataFrame:
    """All raw records of a resource, flattened (nested keys joined by "."), with two extra
    columns: `_partition` (sub-folder, e.g. the scan stage) and `_rawData` (the stored line)."""
    folder = storage.raw(resource)
    try:
        return _read_with_arrow(storage.iter_jsonl_gz_pages(folder))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A field that is a number in one record and text in another has no Arrow type, while
        # pandas keeps it as an object column. Rare, so this path may read the files again.
        return _read_with_pandas(storage.iter_jsonl_gz(folder))


def _read_with_arrow(pages: Iterable[tuple[str, bytes]]) -> pd.DataFrame:
    """Arrow's readers, one call per page: a million records take seconds and hundreds of MB,
    where Python dicts took a minute and gigabytes."""
    partitions, lines, tables = [], [], []
    for partition, page in pages:
        page_lines, records = _lines(page), _records(page)
        if len(page_lines) != records.num_rows:  # would shift every later `_rawData` by a row
            raise ValueError(f"{partition or 'raw'} page: {len(page_lines)} lines but {records.num_rows} records")
        partitions.append(pa.repeat(pa.scalar(partition, pa.large_string()), len(page_lines)))
        lines.append(page_lines)
        tables.append(records)
    # "permissive": a field may be null on one page and text on the next, or int and float
    frame = _flattened(pa.concat_tables(tables, promote_options="permissive")).to_pandas() if tables else pd.DataFrame()
    text = pa.large_string()
    return _with_origin(frame, pa.chunked_array(partitions, text), pa.chunked_array(lines, text))


def _read_with_pandas(lines: Iterable[tuple[str, str]]) -> pd.DataFrame:
    partitions, texts = [], []
    for partition, line in lines:
        partitions.append(partition)
        texts.append(line)
    frame = pd.json_normalize([json.loads(text) for text in texts]) if texts else pd.DataFrame()
    return _with_origin(frame, partitions, texts)


def _with_origin(
    frame: pd.DataFrame, partitions: pa.ChunkedArray | list[str], lines: pa.ChunkedArray | list[str]
) -> pd.DataFrame:
    frame["_partition"] = pd.Series(partitions, dtype="string")
    frame["_rawData"] = pd.Series(lines, dtype="string")
    return frame


# A JSON line never holds a raw control character (JSON escapes them), so read as CSV with this
# delimiter and no quoting, every line is one value, exactly as stored.
_ONE_COLUMN_CSV = {
    "read_options": pa_csv.ReadOptions(column_names=["line"]),
    "parse_options": pa_csv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False),
    "convert_options": pa_csv.ConvertOptions(column_types={"line": pa.large_string()}),
}


def _lines(page: bytes) -> pa.Array:
    """The page's lines that hold a record (the JSON reader skips blank ones too), verbatim."""
    lines = pa_csv.read_csv(pa.BufferReader(page), **_ONE_COLUMN_CSV).column("line").combine_chunks()
    return lines.filter(pc.invert(pc.utf8_is_space(lines)))  # CSV drops empty lines, not "  "


def _records(page: bytes) -> pa.Table:
    """The page's records, nested objects as structs, text kept as text."""
    whole_page = pa_json.ReadOptions(use_threads=False, block_size=len(page) + 1)  # no record split in two
    table = pa_json.read_json(pa.BufferReader(page), read_options=whole_page)
    # The reader turns ISO-8601-looking text into timestamps; read those fields again, as text.
    text_schema = pa.schema([field.with_type(_timestamps_as_text(field.type)) for field in table.schema])
    if text_schema.equals(table.schema):
        return table
    as_text = pa_json.ParseOptions(explicit_schema=text_schema)
    return pa_json.read_json(pa.BufferReader(page), read_options=whole_page, parse_options=as_text)


def _timestamps_as_text(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(type_):
        return pa.string()
    if pa.types.is_struct(type_):
        return pa.struct([field.with_type(_timestamps_as_text(field.type)) for field in type_])
    if pa.types.is_list(type_):
        return pa.list_(_timestamps_as_text(type_.value_type))
    return type_


def _flattened(records: pa.Table) -> pa.Table:
    """{"a": {"b": 1}} -> column "a.b", as json_normalize names it; an empty object vanishes."""
    while any(pa.types.is_struct(field.type) for field in records.schema):
        records = records.flatten()
    return records
