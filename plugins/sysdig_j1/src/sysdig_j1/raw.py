"""Raw pages: each API page stored as one Parquet file, checked against the source contract.

A page is scrubbed of secrets and every record is checked against its resource's contract
(`contract.py`) before anything is written, so storage only ever holds records the transform can
trust. The file has one typed column per contract field (dotted names, timestamps already in
epoch milliseconds) and `_rawData`, the scrubbed record as JSON text. Reading a resource back is
one typed path: every page must carry exactly the contract's schema (a page written under another
contract is refused, naming the file), so the frame's columns are typed before the transform
sees them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from sysdig_j1.contract import Contract, ContractError, contract_for
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.scrub import NestedTooDeep, Scrubber

PAGE_SUFFIX = ".parquet"
RAW_DATA = pa.field("_rawData", pa.string())
NULLABLE = {  # keep integers integers when a column has nulls (numpy would make them floats)
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(),
}


def page_schema(contract: Contract) -> pa.Schema:
    return contract.schema.append(RAW_DATA)


def encode_page(records: list[Any], contract: Contract, scrubber: Scrubber, where: str) -> bytes:
    """One page as Parquet bytes; ContractError naming `where`, the record and the field if any
    record breaks the contract. `where` is e.g. 'users: GET /platform/v1/users page 3'.
    A resource that keeps no `_rawData` (findings) stores only its contract's fields, so only
    those are scrubbed and checked, a column at a time; any doubt goes record by record."""
    if not contract.raw_data:
        columns = contract.columns(records, scrubber.column)
        if columns is not None:
            lines = pa.nulls(len(records), pa.string())
            return _parquet(pa.table({**columns, RAW_DATA.name: lines}, schema=page_schema(contract)))
    columns = {name: [] for name in contract.fields}
    lines = []
    for position, record in enumerate(records):
        clean = None
        try:
            clean = scrubber.record(record)
            values = contract.values(clean)
            line = json.dumps(clean, separators=(",", ":"), ensure_ascii=False)
            line.encode()  # a lone surrogate cannot be stored, uploaded or even logged as UTF-8
        except (ContractError, NestedTooDeep, UnicodeEncodeError) as exc:
            problem = _invalid_text(clean) if isinstance(exc, UnicodeEncodeError) else str(exc)
            who = contract.identify(record if clean is None else clean)
            raise ContractError(scrubber.text(
                f"{where}, record {position} ({who}) breaks the source contract: {problem}"
            )) from None
        for name, value in values.items():
            columns[name].append(value)
        lines.append(line if contract.raw_data else None)
    return _parquet(pa.table({**columns, RAW_DATA.name: lines}, schema=page_schema(contract)))


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _invalid_text(value: Any, path: str = "") -> str | None:
    """Which field holds text that is not valid UTF-8 (a lone surrogate); only called once the
    record failed to encode, and the scrubber has already bounded its depth."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"field {path.lstrip('.') or '(the record)'!r} holds text that is not valid Unicode (a lone surrogate)"
        return None
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _invalid_text(child, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}")
        if found or (isinstance(key, str) and (found := _invalid_text(key, f"{path} key {key!r}"))):
            return found
    return None


def write_page(storage: RunStorage, listing: str, number: int, records: list[Any], scrubber: Scrubber,
               endpoint: str) -> None:
    """Store page `number` of a listing under raw/<listing>/ (listing 'image_scans/runtime' is the
    runtime stage of resource image_scans); the name is its position, so re-runs overwrite it."""
    save_page(storage, listing, number, encode_listing_page(listing, number, records, scrubber, endpoint))


def encode_listing_page(listing: str, number: int, records: list[Any], scrubber: Scrubber, endpoint: str) -> bytes:
    """`encode_page` under the contract of the listing's resource, errors naming the page."""
    resource = listing.split("/")[0]
    return encode_page(records, contract_for(resource), scrubber, f"{resource}: GET {endpoint} page {number}")


def save_page(storage: RunStorage, listing: str, number: int, data: bytes) -> None:
    folder = storage.path("raw", *listing.split("/"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"part-{number:05d}{PAGE_SUFFIX}").write_bytes(data)


def read_raw(storage: RunStorage, resource: str, columns: list[str] | None = None,
             folder: str | None = None) -> pd.DataFrame:
    """All stored records of a resource (or of its sub-folder `folder`, e.g. 'findings/shard-003')
    as one frame of its contract's typed columns (or only `columns` of them), plus `_partition`
    (sub-folder, e.g. the scan stage) and `_rawData` (the scrubbed record) unless `columns` leaves
    it out."""
    return read_pages(resource, list(storage.pages(storage.raw(folder or resource), PAGE_SUFFIX)), columns)


def page_batches(storage: RunStorage, folder: str, rows: int) -> Iterator[list[tuple[str, ObjectStoragePath]]]:
    """The pages under raw/`folder`, in name order, grouped into batches of about `rows` records
    (a page is never split), for `read_pages`: what streams a large resource batch by batch."""
    batch, count = [], 0
    for partition, path in storage.pages(storage.raw(folder), PAGE_SUFFIX):
        with path.open("rb") as file:
            count += pq.ParquetFile(file).metadata.num_rows
        batch.append((partition, path))
        if count >= rows:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def read_pages(resource: str, pages: list[tuple[str, ObjectStoragePath]], columns: list[str] | None = None
               ) -> pd.DataFrame:
    """These (partition, path) pages of a resource as one typed frame (see `read_raw`)."""
    schema = page_schema(contract_for(resource))
    tables, partitions = [], []
    for partition, path in pages:
        page = pq.ParquetFile(pa.BufferReader(path.read_bytes()))
        if not page.schema_arrow.equals(schema):
            raise ContractError(f"{resource}: {path} was not written under the current source contract; "
                                "re-run the resource's extract task")
        table = page.read(columns=columns)
        tables.append(table)
        partitions.append(pa.repeat(pa.scalar(partition), table.num_rows))
    if columns is not None:
        schema = pa.schema([schema.field(name) for name in columns])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    frame = table.to_pandas(types_mapper=NULLABLE.get)
    frame["_partition"] = pd.Series(pa.chunked_array(partitions, pa.string()), dtype=pd.StringDtype())
    return frame
