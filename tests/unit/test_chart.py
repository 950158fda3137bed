"""The server-drawn chart: a legend entry and a distinct colour for every series, also with all 13 actions."""

import re
from datetime import UTC, datetime, timedelta

from audit_query.chart import PALETTE, render
from audit_query.stats import BucketSize
from audit_schemas import Action


def test_all_thirteen_actions_get_a_legend_entry_and_a_colour_of_their_own() -> None:
    until = datetime(2026, 12, 3, tzinfo=UTC)
    since = until - timedelta(days=3)
    rows = [
        {"bucket": (since + timedelta(days=i % 3)).isoformat(), "event": a.value, "count": 1 + i * 10}
        for i, a in enumerate(Action)
    ]
    svg = render(rows, since, until, BucketSize.DAY, "event")
    legend = re.findall(r'class="legend">([^<]+)<', svg)
    assert sorted(legend) == sorted(a.value for a in Action)  # the largest series included
    bar = re.compile(r'fill="(#[0-9A-Fa-f]{6})" data-since="[^"]+" data-until="[^"]+" data-series="([^"]+)"')
    fills = {m.group(2): m.group(1) for m in bar.finditer(svg)}
    assert len(set(fills.values())) == len(fills) == len(Action)
    assert len(set(PALETTE)) == len(PALETTE) >= len(Action)


def test_day_buckets_are_the_zones_days_with_labels_and_titles_in_that_zone() -> None:
    # Los Angeles leaves daylight-saving time on 2026-11-01: that day is 25 hours long.
    since = datetime(2026, 10, 31, 7, tzinfo=UTC)  # Oct 31, 00:00 PDT
    until = datetime(2026, 11, 3, 8, tzinfo=UTC)  # Nov 3, 00:00 PST
    rows = [{"bucket": "2026-11-01T07:00:00+00:00", "count": 2}, {"bucket": "2026-11-02T08:00:00+00:00", "count": 1}]
    svg = render(rows, since, until, BucketSize.DAY, None, "America/Los_Angeles")
    bars = re.findall(r'data-since="([^"]+)" data-until="([^"]+)"[^>]*aria-label="([^"]+)"', svg)
    assert bars == [
        ("2026-11-01T07:00:00+00:00", "2026-11-02T08:00:00+00:00", "2026-11-01 00:00 PDT: 2"),
        ("2026-11-02T08:00:00+00:00", "2026-11-03T08:00:00+00:00", "2026-11-02 00:00 PST: 1"),
    ]
    labels = re.findall(r'font-size="10">([A-Z][a-z]{2} \d\d)<', svg)
    assert labels == ["Oct 31", "Nov 01", "Nov 02"]
    assert "(America/Los_Angeles)" in svg


def test_utc_is_the_default_zone() -> None:
    since = datetime(2026, 12, 1, tzinfo=UTC)
    svg = render([{"bucket": since.isoformat(), "count": 3}], since, since + timedelta(days=2), BucketSize.DAY, None)
    assert 'data-since="2026-12-01T00:00:00+00:00" data-until="2026-12-02T00:00:00+00:00"' in svg
    assert "2026-12-01 00:00 UTC: 3" in svg
