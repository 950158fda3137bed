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
