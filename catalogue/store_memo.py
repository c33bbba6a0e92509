"""What a writing block knows of the store it holds, so that its commits need not ask again.

Inside ``Catalogue.writing()`` the block's connection is the only writer, and the store only
ever grows, so the ids it holds and the ``key_bits`` of its findings, read once, stay true as
long as each commit of the block adds what it landed. A commit still reads the head commit,
in the query it runs anyway, and a head other than the memo's makes the memo read the store
again: after a commit that failed between its COMMIT and ``add``, or a commit made through
another connection of this process (DuckDB shares one database between them).
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

__all__ = ["MEMO_TABLES", "StoreMemo"]

MEMO_TABLES = ("models", "datasets", "analyses", "runs", "artifacts")
"""Tables whose held ids the memo answers for; finding ids are too many to keep, and the
queue changes outside commits."""


class StoreMemo:
    """Held ids of ``MEMO_TABLES`` (an analysis' with its tolerance) and the findings' key_bits,
    as of the head commit ``head``."""

    def __init__(self) -> None:
        self.head: tuple[int, str] | None = None
        self._read = False
        self._ids: dict[str, dict[str, Any]] = {}
        self._stored_bits = np.empty(0, np.int64)  # sorted, as read
        self._added_bits: set[int] = set()  # of the findings this block landed

    def is_at(self, head: tuple[int, str] | None) -> bool:
        """Whether the memo describes the store whose latest commit is ``head``."""
        return self._read and self.head == head

    def read(self, con: duckdb.DuckDBPyConnection, head: tuple[int, str] | None) -> None:
        """Read what the store holds; ``head`` is its latest commit, read in the same transaction."""
        self._ids = {name: dict(con.execute(f"SELECT id, {'tolerance' if name == 'analyses' else 'NULL'} "
                                            f"FROM store.{name}").fetchall())
                     for name in MEMO_TABLES}
        bits = con.execute("SELECT key_bits FROM store.findings WHERE key_bits IS NOT NULL").fetchnumpy()
        self._stored_bits = np.sort(np.asarray(bits["key_bits"], np.int64))
        self._added_bits = set()
        self.head, self._read = head, True

    def held(self, table: str, ids: set[str]) -> dict[str, Any]:
        """The ids of ``table`` among ``ids`` that the store holds, each with its tolerance or None."""
        known = self._ids[table]
        return {i: known[i] for i in ids if i in known}

    def key_hits(self, bits: pa.ChunkedArray) -> list[int]:
        """The distinct values of ``bits`` that some stored finding's key_bits has."""
        wanted = np.unique(bits.to_numpy())
        hits = self._added_bits.intersection(wanted.tolist())
        if len(self._stored_bits):
            at = np.minimum(np.searchsorted(self._stored_bits, wanted), len(self._stored_bits) - 1)
            hits.update(wanted[self._stored_bits[at] == wanted].tolist())
        return sorted(hits)

    def add(self, new: dict[str, pa.Table], head: tuple[int, str]) -> None:
        """Take in the rows of a commit that landed, ``head``."""
        for name in MEMO_TABLES:
            ids = new[name].column("id").to_pylist()
            values = new[name].column("tolerance").to_pylist() if name == "analyses" else [None] * len(ids)
            self._ids[name].update(zip(ids, values))
        self._added_bits.update(new["findings"].column("key_bits").to_pylist())
        self.head = head  # last: a memo interrupted before this line reads the store again
