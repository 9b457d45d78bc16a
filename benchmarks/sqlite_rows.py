"""What one event row costs sqlite, against several events packed in one row.

Run: ``.venv/bin/python benchmarks/sqlite_rows.py``.

The SSE figure on the sqlite store is bounded by the writer's cost per event
(benchmarks/README.md). This measures that cost outside steerline: a new
WAL file with steerline's ``events`` table (``WITHOUT ROWID``, primary key
``(conversation_id, seq)``, ``synchronous=NORMAL``), 19 968 events of 274
bytes inserted in transactions of 8, 64 and 256 events the way the writer
does (multi-row ``INSERT`` statements; the schema is steerline's own),
against the same events packed to a row (one blob per transaction, what a
schema that stores a commit's run of a conversation's events in one row
would write). Wall time and CPU time (``time.process_time``) per event, best of 3.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

from steerline.log.sqlite import _SCHEMA  # the very table the writer fills

EVENTS = 19_968  # a multiple of every batch size below
ENVELOPE = b"x" * 274
CONVERSATION = "conv-0123456789abcdef"


def insert(path: Path, batch: int, packed: bool) -> tuple[float, float]:
    for suffix in ("", "-wal", "-shm"):
        with_suffix = Path(f"{path}{suffix}")
        if with_suffix.exists():
            os.remove(with_suffix)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    rows = [
        (CONVERSATION, i + 1, "message_chunk", "run-0123456789abcdef", ENVELOPE)
        for i in range(EVENTS)
    ]
    many = "INSERT INTO events VALUES " + ",".join(["(?, ?, ?, ?, ?)"] * min(batch, 64))
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, EVENTS, batch):
        chunk = rows[start : start + batch]
        conn.execute("BEGIN IMMEDIATE")
        if packed:
            last = chunk[-1]
            blob = b"".join(row[4] for row in chunk)
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", (*last[:4], blob))
        else:
            for sub in range(0, len(chunk), 64):
                part = chunk[sub : sub + 64]
                conn.execute(many, [value for row in part for value in row])
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    conn.close()
    return wall / EVENTS * 1e6, cpu / EVENTS * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.db"
        print(f"{EVENTS} events of {len(ENVELOPE)} B; µs per event, best of 3 (wall / CPU)")
        for batch in (8, 64, 256):
            for packed in (False, True):
                best = min((insert(path, batch, packed) for _ in range(3)), key=lambda r: r[1])
                layout = f"{batch} events in 1 row" if packed else "1 event per row"
                print(f"  transactions of {batch:>3}, {layout:<22} {best[0]:6.2f} / {best[1]:5.2f}")


if __name__ == "__main__":
    main()
