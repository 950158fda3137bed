-- A verifiable log: one RFC 9162 Merkle tree per projected topic partition. Leaves are every record consumed
-- (projected, dead-lettered or dropped as a duplicate), in offset order, with a dense index beside the
-- offset (offsets are not consecutive). Written in the same transaction as the batch's rows and offsets.

CREATE TABLE merkle_leaves (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    leaf_index   bigint  NOT NULL CHECK (leaf_index >= 0),
    kafka_offset bigint  NOT NULL,
    leaf_hash    bytea   NOT NULL CHECK (length(leaf_hash) = 32),
    leaf_data    bytea   NOT NULL,
    PRIMARY KEY (topic, partition, leaf_index),
    UNIQUE (topic, partition, kafka_offset)
);
COMMENT ON COLUMN merkle_leaves.leaf_data IS
    'the raw record (topic, partition, offset, key, headers, value; length-prefixed), before any decoding';

-- Complete subtrees above the leaves (level >= 1): any proof is O(log n) reads, never a rehash.
CREATE TABLE merkle_nodes (
    topic     text     NOT NULL,
    partition integer  NOT NULL,
    level     smallint NOT NULL CHECK (level >= 1),
    node_index bigint  NOT NULL,
    hash      bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (topic, partition, level, node_index)
);

-- The right frontier: all that is needed to extend each tree. Moves with the offsets, fenced on its size.
CREATE TABLE merkle_trees (
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    size       bigint      NOT NULL CHECK (size >= 0),
    frontier   bytea[]     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

GRANT SELECT, INSERT ON merkle_leaves, merkle_nodes TO audit_writer;
GRANT SELECT, INSERT, UPDATE ON merkle_trees TO audit_writer;
GRANT SELECT ON merkle_leaves, merkle_nodes, merkle_trees TO audit_reader;
