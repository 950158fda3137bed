"""The conditions the read-model comparison filters by: a tail is one exact range per partition, so the position's
block-range index can serve each; a whole comparison keeps one set-based condition."""

from audit_projector.compare import _bounded

BOUNDS = {("t.audit", 0): 120, ("t.audit", 1): 90, ("t.logs", 0): 400}


def test_a_tail_is_one_exact_range_per_partition_numbered_from_first() -> None:
    since = {("t.audit", 0): 100, ("t.logs", 0): 350}  # partition 1 has no earlier comparison: from 0
    condition, args = _bounded(BOUNDS, 3, since)
    assert condition.count(" OR ") == len(BOUNDS) - 1
    assert "$3 AND t.kafka_partition = $4 AND t.kafka_offset >= $5::bigint AND t.kafka_offset < $6::bigint" in (
        condition
    )
    assert "$14::bigint" in condition
    assert "$15" not in condition
    assert args == ["t.audit", 0, 100, 120, "t.audit", 1, 0, 90, "t.logs", 0, 350, 400]


def test_a_tail_of_no_partitions_matches_nothing() -> None:
    assert _bounded({}, 1, {}) == ("false", [])


def test_a_whole_comparison_is_one_condition_from_offset_zero() -> None:
    condition, args = _bounded(BOUNDS, 1)
    assert condition.lstrip().startswith("EXISTS")
    assert " OR " not in condition
    assert args == [["t.audit", "t.audit", "t.logs"], [0, 1, 0], [0, 0, 0], [120, 90, 400]]
    assert _bounded(None, 1) == ("true", [])
