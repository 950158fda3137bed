"""Server-rendered SVG of a stats answer: events over time, stacked by a second dimension.

Every text is escaped; every bar carries its bucket's bounds (`data-since`, `data-until`) so the console can
narrow its table to a clicked bar, an accessible name and a `<title>` for a hover. Bars are out of the tab order
(`tabindex=-1`): the console makes the chart one tab stop and moves between bars with the arrow keys. No script,
no external reference: it is inserted into the console as it is.
"""

from datetime import UTC, datetime, time, timedelta
from html import escape
from typing import Any, Final
from zoneinfo import ZoneInfo

from audit_query.stats import BUCKET_WIDTH, BucketSize

WIDTH: Final = 960
HEIGHT: Final = 200
PAD_LEFT: Final = 44
PAD_BOTTOM: Final = 22
PAD_TOP: Final = 10
LEGEND: Final = 150
PALETTE: Final = (
    # Okabe and Ito's colour-blind-safe set, then the darker members of Paul Tol's "muted" scheme: thirteen
    # colours, one per action, told apart also with deuteranopia and protanopia; the legend names each.
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#56B4E9",
    "#CC79A7",
    "#F0E442",
    "#332288",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
    "#000000",
)
STATUS_COLOURS: Final = {"succeeded": "#009E73", "failed": "#D55E00", "aborted": "#999999", "in_progress": "#E69F00"}


def _buckets(since: datetime, until: datetime, size: BucketSize, zone: ZoneInfo) -> list[datetime]:
    """Every bucket start of the range, also the empty ones, as UTC instants: hours, or the zone's midnights
    (a day across a daylight-saving change is 23 or 25 hours long, as PostgreSQL's date_trunc in that zone)."""
    if size is BucketSize.HOUR:
        at = since.replace(minute=0, second=0, microsecond=0)
        hours: list[datetime] = []
        while at < until and len(hours) <= 2000:
            hours.append(at)
            at += BUCKET_WIDTH[size]
        return hours
    day = since.astimezone(zone).date()
    if size is BucketSize.WEEK:
        day -= timedelta(days=day.weekday())
    step = timedelta(days=7 if size is BucketSize.WEEK else 1)
    out: list[datetime] = []
    while len(out) <= 2000:
        at = datetime.combine(day, time(), zone).astimezone(UTC)
        if at >= until:
            break
        out.append(at)
        day += step
    return out


def render(
    rows: list[dict[str, Any]],
    since: datetime,
    until: datetime,
    size: BucketSize,
    series_key: str | None,
    tz: str = "UTC",
) -> str:
    """A stacked bar chart of `rows` (`bucket`, optional `series_key`, `count`); axis labels and titles in `tz`,
    whose days and weeks the buckets are."""
    zone = ZoneInfo(tz)
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    buckets = _buckets(since, until, size, zone)
    ends = [*buckets[1:], until]
    names = sorted({str(r.get(series_key)) for r in rows}) if series_key else ["entries"]
    colours = {
        n: STATUS_COLOURS.get(n, PALETTE[i % len(PALETTE)]) if series_key == "outcome" else PALETTE[i % len(PALETTE)]
        for i, n in enumerate(names)
    }
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r["bucket"]), str(r.get(series_key)) if series_key else "entries")
        counts[key] = counts.get(key, 0) + int(r["count"])
    totals = {b: sum(counts.get((b.isoformat(), n), 0) for n in names) for b in buckets}
    peak = max([*totals.values(), 1])
    plot_w = WIDTH - PAD_LEFT - LEGEND
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.8, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="group" '
        f'aria-label="entries per {size.value} ({escape(tz)}), {escape(_local(since, zone))} to '
        f'{escape(_local(until, zone))}">',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 8}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + plot_h}" text-anchor="end" font-size="10">0</text>',
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{PAD_LEFT + plot_w}" y2="{PAD_TOP + plot_h}" '
        'stroke="#99a" stroke-width="1"/>',
    ]
    label_every = max(1, len(buckets) // 8)
    for i, bucket in enumerate(buckets):
        x = PAD_LEFT + i * slot + (slot - bar_w) / 2
        y = float(PAD_TOP + plot_h)
        end = min(ends[i], until)
        for name in names:
            n = counts.get((bucket.isoformat(), name), 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            when = _local(bucket, zone)
            title = f"{when} · {name}: {n}" if series_key else f"{when}: {n}"
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colours[name]}" data-since="{escape(max(bucket, since).isoformat())}" '
                f'data-until="{escape(end.isoformat())}" data-series="{escape(name)}" tabindex="-1" '
                f'role="button" aria-label="{escape(title)}">'
                f"<title>{escape(title)}</title></rect>"
            )
        if i % label_every == 0:
            label = bucket.astimezone(zone).strftime("%H:%M" if size is BucketSize.HOUR else "%b %d")
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="10">'
                f"{escape(label)}</text>"
            )
    step = min(14.0, (HEIGHT - PAD_TOP - 12) / max(len(names), 1))  # every series has its legend entry
    for i, name in enumerate(names):
        y = PAD_TOP + 4 + i * step
        x = WIDTH - LEGEND + 10
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="10" height="10" fill="{colours[name]}"/>')
        parts.append(f'<text x="{x + 14}" y="{y + 9:.1f}" font-size="11" class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _local(at: datetime, zone: ZoneInfo) -> str:
    """An instant as the zone's wall time with its abbreviation (`2026-12-03 00:00 PST`)."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


__all__ = ["render"]
