"""Archives verify offline: leaves rebuild the signed root, files join up, and any damage is named."""

import base64
import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit_schemas import merkle
from audit_schemas.archive import ArchiveError, ArchiveHeader, read_header, verify, verify_chain, write
from audit_schemas.checkpoint import Checkpoint, NoteSigner

TOPIC, PARTITION = "acme.audit", 3
ORIGIN = f"audit-trail/{TOPIC}/{PARTITION}"
SIGNER, _ = NoteSigner.generate("audit-trail")
KEY = SIGNER.verifier_key


def _records(count: int) -> list[bytes]:
    return [
        merkle.leaf_data(TOPIC, PARTITION, 10 + 2 * i, b"k", [("h", b"v")], f"event {i}".encode()) for i in range(count)
    ]


def _note(leaves: list[bytes], size: int) -> str:
    root = merkle.root([merkle.leaf_hash(d) for d in leaves[:size]])
    return SIGNER.sign(Checkpoint(ORIGIN, size, root).body())


def _archive(tmp: Path, leaves: list[bytes], first: int, end: int, name: str, note: str | None = None) -> Path:
    frontier, _, _ = merkle.append_leaves([], 0, [merkle.leaf_hash(d) for d in leaves[:first]])
    header = ArchiveHeader(ORIGIN, TOPIC, PARTITION, first, end, 10 + 2 * first, 10 + 2 * (end - 1) + 1,
                           tuple(frontier), note or _note(leaves, end))  # fmt: skip
    _, _, nodes = merkle.append_leaves([], 0, [merkle.leaf_hash(d) for d in leaves[:end]])
    inside = [(lv, ix, h) for lv, ix, h in nodes if ix * 2**lv >= first]
    path = tmp / name
    with path.open("wb") as out:
        write(out, header, [(i, 10 + 2 * i, leaves[i]) for i in range(first, end)], inside)
    return path


def test_two_archives_of_a_partition_verify_and_join_up(tmp_path: Path) -> None:
    leaves = _records(12)
    first, second = _archive(tmp_path, leaves, 0, 5, "a.ndjson.gz"), _archive(tmp_path, leaves, 5, 12, "b.ndjson.gz")
    done = verify_chain([second, first], [KEY])  # any order on the command line
    assert [(a.header.first_leaf, a.header.end_leaf, a.leaves) for a in done] == [(0, 5, 5), (5, 12, 7)]
    assert done[1].checkpoint.root == merkle.root([merkle.leaf_hash(d) for d in leaves])
    assert read_header(second).end_offset == 10 + 2 * 11 + 1


def test_a_later_archive_alone_is_refused_without_its_predecessor(tmp_path: Path) -> None:
    leaves = _records(12)
    second = _archive(tmp_path, leaves, 5, 12, "b.ndjson.gz")
    verify(second, [KEY])  # on its own it proves its leaves against its signed root
    with pytest.raises(ArchiveError, match="leaves before 5 is missing"):
        verify_chain([second], [KEY])


Lines = list[dict[str, Any]]


def _rewrite(path: Path, change: Callable[[Lines], Lines]) -> None:
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in change(lines))))


def _altered(lines: Lines) -> Lines:
    data = base64.b64decode(lines[2]["data"])
    lines[2]["data"] = base64.b64encode(data[:-1] + b"X").decode()  # the second record's value, one byte changed
    return lines


def _renumbered(lines: Lines) -> Lines:
    lines[1]["offset"] = 99
    return lines


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_altered, "does not match the archived leaves|do not rebuild the checkpoint's root"),
        (_renumbered, "out of order or outside"),
        (lambda ls: [ls[0], *ls[2:]], "leaf 0 is missing"),
        (lambda ls: ls[:-1], "truncated"),
        (lambda ls: ls[:3], "truncated"),
        (lambda ls: [*ls, ls[-1]], "data after the end"),
    ],
)
def test_damage_is_named(tmp_path: Path, damage: Callable[[Lines], Lines], message: str) -> None:
    path = _archive(tmp_path, _records(6), 0, 6, "a.ndjson.gz")
    _rewrite(path, damage)
    with pytest.raises(ArchiveError, match=message):
        verify(path, [KEY])


def test_a_cut_download_and_a_wrong_key_are_refused(tmp_path: Path) -> None:
    path = _archive(tmp_path, _records(6), 0, 6, "a.ndjson.gz")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="not a complete gzip file"):
        verify(path, [KEY])
    path.write_bytes(whole)
    other, _ = NoteSigner.generate("audit-trail")
    with pytest.raises(ArchiveError, match="checkpoint does not verify"):
        verify(path, [other.verifier_key])


def test_a_checkpoint_of_another_size_is_refused(tmp_path: Path) -> None:
    leaves = _records(6)
    path = _archive(tmp_path, leaves, 0, 6, "a.ndjson.gz", note=_note(leaves, 5))
    with pytest.raises(ArchiveError, match="not this archive's end"):
        verify(path, [KEY])


def test_writing_refuses_leaves_out_of_order() -> None:
    leaves = _records(3)
    header = ArchiveHeader(ORIGIN, TOPIC, PARTITION, 0, 3, 10, 15, (), _note(leaves, 3))
    with pytest.raises(ArchiveError, match="out of order"):
        write(io.BytesIO(), header, [(1, 12, leaves[1])], [])
