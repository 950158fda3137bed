"""Proof size and offline verification time per entry, on a tree of a million leaves (one run).

Builds the tree in memory with the same functions the projector uses, proves random entries, and times the
auditor's side: checkpoint signature plus inclusion proof, and a consistency proof between two checkpoints.
"""

import argparse
import os
import random
import time

from audit_schemas import merkle
from audit_schemas.checkpoint import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    args = parser.parse_args()
    started = time.perf_counter()
    leaves = [merkle.leaf_hash(os.urandom(200)) for _ in range(args.leaves)]
    frontier, size, made = merkle.append_leaves([], 0, leaves)
    nodes = {(level, index): value for level, index, value in made}
    root = merkle.frontier_root(frontier)
    built = time.perf_counter() - started

    def node(level: int, index: int) -> bytes:
        return leaves[index] if level == 0 else nodes[(level, index)]

    signer, _ = NoteSigner.generate("bench")
    verifier = [NoteVerifier.parse(signer.verifier_key)]
    note = signer.sign(Checkpoint("bench/topic/0", size, root).body())
    picks = [random.randrange(size) for _ in range(args.proofs)]
    proofs = [merkle.inclusion_path(i, size, node) for i in picks]
    started = time.perf_counter()
    for i, path in zip(picks, proofs, strict=True):
        checkpoint = open_checkpoint(note, verifier)
        merkle.verify_inclusion(leaves[i], i, size, path, checkpoint.root)
    per_entry = (time.perf_counter() - started) / args.proofs
    old = size // 3
    consistency = merkle.consistency_proof(old, size, node)
    old_root = _root(leaves, old)
    started = time.perf_counter()
    merkle.verify_consistency(old, size, old_root, root, consistency)
    consistency_s = time.perf_counter() - started
    hashes = sum(len(p) for p in proofs) / len(proofs)
    print(f"tree:                       {size} leaves, built in {built:.1f} s ({size / built:,.0f} leaves/s)")
    print(f"inclusion proof:            {hashes:.1f} hashes = {hashes * 32:.0f} bytes on average")
    print(f"verify entry (note + path): {per_entry * 1e6:.0f} µs per entry")
    print(f"consistency proof:          {len(consistency)} hashes, verified in {consistency_s * 1e6:.0f} µs")


def _root(leaves: list[bytes], size: int) -> bytes:
    frontier, _, _ = merkle.append_leaves([], 0, leaves[:size])
    return merkle.frontier_root(frontier)


if __name__ == "__main__":
    main()
