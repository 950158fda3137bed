"""RFC 9162 Merkle trees against the RFC 6962 reference vectors, and every proof for every size up to 40."""

import pytest

from audit_schemas.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    extend,
    frontier_root,
    inclusion_path,
    leaf_data,
    leaf_hash,
    node_hash,
    root,
    subtree_levels,
    verify_consistency,
    verify_inclusion,
)

# The reference inputs and roots of RFC 6962 trees of 0..8 leaves (as published with the reference implementations).
INPUTS = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _store(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every complete subtree's hash, as the projector stores them."""
    nodes: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(leaves):
        nodes[(0, i)] = leaf
        level, index = 0, i
        while index & 1:
            nodes[(level + 1, index >> 1)] = node_hash(nodes[(level, index - 1)], nodes[(level, index)])
            level, index = level + 1, index >> 1
    return nodes


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    leaves = [leaf_hash(d) for d in INPUTS[:size]]
    assert root(leaves).hex() == ROOTS[size]
    frontier, n = extend([], 0, leaves)
    assert n == size
    assert frontier_root(frontier).hex() == ROOTS[size]


def test_frontier_grows_in_batches_like_one_by_one() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(100)]
    frontier: list[bytes] = []
    size = 0
    for start in range(0, 100, 7):
        frontier, size = extend(frontier, size, leaves[start : start + 7])
        assert frontier_root(frontier) == root(leaves[:size])
    assert len(frontier) == bin(100).count("1")


def test_subtree_levels_name_exactly_the_nodes_completed() -> None:
    made = subtree_levels(5, 3)
    assert made == [(0, 5), (1, 2), (0, 6), (0, 7), (1, 3), (2, 1), (3, 0)]


@pytest.mark.parametrize("size", range(1, 41))
def test_every_inclusion_proof_verifies_and_tampering_fails(size: int) -> None:
    leaves = [leaf_hash(bytes([i, size])) for i in range(size)]
    nodes = _store(leaves)
    expected = root(leaves)
    for index in range(size):
        path = inclusion_path(index, size, lambda level, i: nodes[(level, i)])
        verify_inclusion(leaves[index], index, size, path, expected)
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(b"forged"), index, size, path, expected)
        if path:
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], index, size, path[:-1], expected)
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], index, size, [*path, path[0]], expected)
        if size > 1:
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], (index + 1) % size, size, path, expected)


@pytest.mark.parametrize("new_size", range(1, 33))
def test_every_consistency_proof_verifies_and_a_rewritten_history_fails(new_size: int) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(new_size)]
    nodes = _store(leaves)
    new_root = root(leaves)
    for old_size in range(new_size + 1):
        proof = consistency_proof(old_size, new_size, lambda level, i: nodes[(level, i)])
        old_root = root(leaves[:old_size])
        verify_consistency(old_size, new_size, old_root, new_root, proof)
        if 0 < old_size < new_size:
            with pytest.raises(ProofError):
                verify_consistency(old_size, new_size, leaf_hash(b"other history"), new_root, proof)
            with pytest.raises(ProofError):
                verify_consistency(old_size, new_size, old_root, node_hash(new_root, new_root), proof)


def test_proof_arguments_out_of_range_are_refused() -> None:
    with pytest.raises(ProofError):
        inclusion_path(3, 3, lambda level, i: b"")
    with pytest.raises(ProofError):
        verify_inclusion(b"x" * 32, 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_consistency(5, 4, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(4, 4, leaf_hash(b"a"), leaf_hash(b"b"), [])


def test_leaf_data_is_unambiguous() -> None:
    base = leaf_data("t", 1, 2, b"k", [("h", b"v")], b"value")
    variants = {
        leaf_data("t", 1, 2, b"k", [("h", b"v")], b"value"),
        leaf_data("t", 1, 2, None, [("h", b"v")], b"value"),
        leaf_data("t", 1, 2, b"", [("h", b"v")], b"value"),
        leaf_data("t", 1, 2, b"k", [("hv", b"")], b"value"),
        leaf_data("t", 1, 2, b"k", [], b"value"),
        leaf_data("t", 12, 2, b"k", [("h", b"v")], b"value"),
        leaf_data("t1", 2, 2, b"k", [("h", b"v")], b"value"),
        leaf_data("t", 1, 2, b"k", [("h", b"v")], None),
    }
    assert len(variants) == 8
    assert base in variants
