-- The log position of entries, outcomes and log lines indexed by a B-tree (merkle_leaves and dead_letters have a
-- unique one), replacing the block-range indexes of 0020, which every scan reads whole: each arm of the swap's tail
-- comparison (one per partition, each table, both models) cost a pass over every block range of the table. A B-tree
-- reads the tail's rows and a few pages above them, whatever the model's size; it costs an index write per row,
-- measured by `bench.ingest` (bench/README.md). The swap no longer summarizes anything first.
DROP INDEX audit_entries_offset_range;
DROP INDEX audit_outcomes_offset_range;
DROP INDEX execution_logs_offset_range;
CREATE INDEX audit_entries_position ON audit_entries (kafka_topic, kafka_partition, kafka_offset);
CREATE INDEX audit_outcomes_position ON audit_outcomes (kafka_topic, kafka_partition, kafka_offset);
CREATE INDEX execution_logs_position ON execution_logs (kafka_topic, kafka_partition, kafka_offset);
