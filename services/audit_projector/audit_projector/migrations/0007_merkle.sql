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

-- The projector's verdict on records it did not project, apart from their leaves: dead letters keep theirs in
-- dead_letters (reason, detail); identical re-sends it dropped are listed here. Every other leaf was projected
-- (its row carries the same topic, partition and offset).
CREATE TABLE record_verdicts (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    kafka_offset bigint      NOT NULL,
    verdict      text        NOT NULL CHECK (verdict IN ('duplicate')),
    detail       text        NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, kafka_offset)
);

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

GRANT SELECT, INSERT ON merkle_leaves, merkle_nodes, record_verdicts TO audit_writer;
GRANT SELECT ON record_verdicts TO audit_reader;
GRANT SELECT, INSERT, UPDATE ON merkle_trees TO audit_writer;

-- Readers see hashes, never the raw records (leaf data carries a tenant's content): the hashes through this
-- view (it reads with its owner's rights), and a leaf's data only for an entry their tenants may see.
CREATE VIEW merkle_leaf_hashes AS SELECT topic, partition, leaf_index, kafka_offset, leaf_hash FROM merkle_leaves;
GRANT SELECT ON merkle_leaf_hashes, merkle_nodes, merkle_trees TO audit_reader;

CREATE FUNCTION merkle_leaf_of(entry uuid)
RETURNS TABLE (topic text, partition integer, leaf_index bigint, kafka_offset bigint, leaf_data bytea)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
    SELECT l.topic, l.partition, l.leaf_index, l.kafka_offset, l.leaf_data
      FROM audit_entries e
      JOIN merkle_leaves l
        ON l.topic = e.kafka_topic AND l.partition = e.kafka_partition AND l.kafka_offset = e.kafka_offset
     WHERE e.audit_id = entry AND tenant_visible(e.tenant_id)
$$;
REVOKE ALL ON FUNCTION merkle_leaf_of(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION merkle_leaf_of(uuid) TO audit_reader;
