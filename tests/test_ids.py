"""Ids: prefixed, hex, unique within a process, across threads and across a fork."""

from __future__ import annotations

import os
import re
import threading

from steerline.core.ids import new_id


def test_ids_are_prefixed_hex() -> None:
    assert re.fullmatch(r"run-[0-9a-f]{16}", new_id("run"))


def test_ids_are_unique_across_many_pools_and_threads() -> None:
    ids: list[str] = []

    def make() -> None:
        ids.extend(new_id("msg") for _ in range(5_000))  # ~10 pools each

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == len(ids) == 20_000


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    new_id("warm")  # the parent's pool holds unused bytes when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids, leave at once
        os.write(write, " ".join(new_id("c") for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_id("c") for _ in range(10)]
    assert len(child) == 10
    assert not set(child) & set(parent)
