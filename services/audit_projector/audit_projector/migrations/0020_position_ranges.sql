-- Block-range (BRIN) indexes on the log position of the tables the swap compares that have no index on it
-- (merkle_leaves and dead_letters have a unique one). Rows are appended in about log order, so a range of blocks
-- holds a narrow range of offsets: the comparison of what arrived during a swap's pause reads only the newest
-- blocks instead of scanning the whole model, and the pause stops growing with it. A BRIN index is a few pages per
-- gigabyte and costs next to nothing per insert (a B-tree would cost the projector an index write per row). With
-- badly skewed partitions of one topic it narrows less, never wrongly. A block range is only narrowed once
-- summarized: autovacuum summarizes each as it fills, and a swap summarizes what is left before it pauses
-- (compare.summarize_positions). Ranges of 8 pages (64 kB): a tail reads a few of them per partition.
CREATE INDEX audit_entries_offset_range ON audit_entries USING brin (kafka_offset)
    WITH (pages_per_range = 8, autosummarize = on);
CREATE INDEX audit_outcomes_offset_range ON audit_outcomes USING brin (kafka_offset)
    WITH (pages_per_range = 8, autosummarize = on);
CREATE INDEX execution_logs_offset_range ON execution_logs USING brin (kafka_offset)
    WITH (pages_per_range = 8, autosummarize = on);
