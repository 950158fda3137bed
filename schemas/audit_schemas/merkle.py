"""RFC 9162 (Certificate Transparency v2) Merkle trees: hashes, the right frontier, and inclusion and consistency
proofs with their verification. Pure functions over bytes, so an auditor can verify offline with this module alone.
"""

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Final

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""MTH({}): the hash of the empty string (RFC 9162 §2.1.1)."""


NodeReader = Callable[[int, int], bytes]
"""Reads the hash of the complete subtree at (level, index): level 0 holds leaf hashes."""


class ProofError(ValueError):
    """A proof that does not verify, or arguments no proof can have."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf hashes (already hashed with `leaf_hash`), by the recursive definition; O(n)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def frontier_append(frontier: Sequence[bytes], size: int, leaf: bytes) -> list[bytes]:
    """The right frontier after appending `leaf` to a tree of `size` leaves.

    The frontier lists the roots of the perfect subtrees the tree decomposes into, largest first (one per set bit
    of `size`); it is all that is needed to extend the tree and compute its root.
    """
    hashes = list(frontier)
    node, n = leaf, size
    while n & 1:
        node = node_hash(hashes.pop(), node)
        n >>= 1
    hashes.append(node)
    return hashes


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """The tree's root from its right frontier."""
    if not frontier:
        return EMPTY_ROOT
    node = frontier[-1]
    for left in reversed(frontier[:-1]):
        node = node_hash(left, node)
    return node


def extend(frontier: Sequence[bytes], size: int, leaves: Iterable[bytes]) -> tuple[list[bytes], int]:
    """Append many leaf hashes; return the new frontier and size."""
    current = list(frontier)
    for leaf in leaves:
        current = frontier_append(current, size, leaf)
        size += 1
    return current, size


def subtree_levels(size_before: int, count: int) -> list[tuple[int, int]]:
    """(level, index) of every complete subtree node that appending `count` leaves completes, in creation order.

    Level 0 is the leaves. A store that keeps these nodes can answer any proof with O(log n) reads.
    """
    made = []
    for i in range(size_before, size_before + count):
        made.append((0, i))
        level, index = 0, i
        while index & 1:
            level, index = level + 1, index >> 1
            made.append((level, index))
    return made


def inclusion_path(index: int, size: int, node: NodeReader) -> list[bytes]:
    """PATH(index, D[size]): the audit path of leaf `index` in a tree of `size`, read from complete subtrees."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    return _path(index, 0, size, node)


def _path(m: int, start: int, n: int, node: NodeReader) -> list[bytes]:
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, start, k, node), _range_hash(start + k, n - k, node)]
    return [*_path(m - k, start + k, n - k, node), _range_hash(start, k, node)]


def consistency_proof(old_size: int, new_size: int, node: NodeReader) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1); empty when the sizes are equal or old is 0."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    return _subproof(old_size, 0, new_size, True, node)


def _subproof(m: int, start: int, n: int, complete: bool, node: NodeReader) -> list[bytes]:
    if m == n:
        return [] if complete else [_range_hash(start, n, node)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, start, k, complete, node), _range_hash(start + k, n - k, node)]
    return [*_subproof(m - k, start + k, n - k, False, node), _range_hash(start, k, node)]


def _range_hash(start: int, count: int, node: NodeReader) -> bytes:
    """MTH of leaves [start, start+count): a stored complete subtree, or built from the complete subtrees in it."""
    if count & (count - 1) == 0 and start % count == 0:
        return node(count.bit_length() - 1, start // count)
    k = _split(count)
    return node_hash(_range_hash(start, k, node), _range_hash(start + k, count - k, node))


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes) -> None:
    """RFC 9162 §2.1.3.2: raise ProofError unless `path` proves leaf hash `leaf` at `index` under `expected_root`."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != expected_root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: raise ProofError unless the tree of `new_size` extends the tree of `old_size`."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"a tree of {old_size} cannot precede one of {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes take an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes with different roots")
        return
    if old_size == 0:
        if proof:
            raise ProofError("from the empty tree the proof is empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node of the proof
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


def leaf_data(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    value: bytes | None,
) -> bytes:
    """An unambiguous encoding of a Kafka record, taken before any decoding (the leaf's data).

    topic (u32 length + UTF-8) ‖ partition (u32) ‖ offset (u64) ‖ key ‖ header count (u32) ‖ each header name and
    value ‖ value; every byte string is a u32 length (0xFFFFFFFF for null) then its bytes; all big-endian.
    """
    out = [_bytes(topic.encode()), struct.pack(">IQ", partition, offset), _bytes(key), struct.pack(">I", len(headers))]
    for name, header_value in headers:
        out += [_bytes(name.encode()), _bytes(header_value)]
    out.append(_bytes(value))
    return b"".join(out)


def _bytes(value: bytes | None) -> bytes:
    if value is None:
        return b"\xff\xff\xff\xff"
    return struct.pack(">I", len(value)) + value


def append_leaves(
    frontier: Sequence[bytes], size: int, leaves: Iterable[bytes]
) -> tuple[list[bytes], int, list[tuple[int, int, bytes]]]:
    """Append leaf hashes; return the new frontier and size, and every interior node completed on the way
    as (level, index, hash) with level >= 1 (level 0 is the leaves themselves)."""
    hashes = list(frontier)
    made: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        node, n, level, index = leaf, size, 0, size
        while n & 1:
            node = node_hash(hashes.pop(), node)
            n, level, index = n >> 1, level + 1, index >> 1
            made.append((level, index, node))
        hashes.append(node)
        size += 1
    return hashes, size, made
