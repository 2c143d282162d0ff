"""Small line charts as inline SVG (no script, no external asset), for the status page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT, PAD = 300, 80, 4  # the viewBox; the SVG scales to its card's width


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}".removesuffix(".0")


def line_chart(
    title: str, points: Sequence[tuple[datetime, float | None]], start: datetime, end: datetime, unit: str
) -> str:
    """A titled chart of `points` over [start, end]; a None value breaks the line (a gap, not a zero)."""
    known = [v for _, v in points if v is not None]
    if not known:
        body = (
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="none">no samples yet</text>'
        )
        latest = "no data"
    else:
        top = max(max(known), 1.0)
        body = "".join(
            f'<polyline points="{pts}" fill="none" stroke="#1a73e8" stroke-width="1.5"/>'
            for pts in _segments(points, start, end, top)
        )
        body += f'<text x="{PAD}" y="12" class="axis">{escape(_fmt(top))}</text>'
        last = points[-1][1]
        latest = f"{_fmt(last)} {unit}" if last is not None else "unknown"
    label = f"{title}: {latest}"
    return (
        f'<figure class="chart"><figcaption>{escape(title)} <b>{escape(latest)}</b></figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="none">'
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fbfcfd" stroke="#dde1e7"/>{body}</svg>'
        "</figure>"
    )


def _segments(
    points: Sequence[tuple[datetime, float | None]], start: datetime, end: datetime, top: float
) -> list[str]:
    """Polyline point lists, one per run of known values."""
    span = max((end - start) / timedelta(seconds=1), 1.0)
    runs: list[list[str]] = [[]]
    for at, value in points:
        if value is None:
            runs.append([])
            continue
        x = PAD + (WIDTH - 2 * PAD) * min(max((at - start) / timedelta(seconds=1) / span, 0.0), 1.0)
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD - 12) * (value / top)
        runs[-1].append(f"{x:.1f},{y:.1f}")
    # a lone point is drawn as a short flat line so it shows
    return [" ".join(r if len(r) > 1 else [r[0], _nudge(r[0])]) for r in runs if r]


def _nudge(point: str) -> str:
    x, y = point.split(",")
    return f"{float(x) + 2:.1f},{y}"
