"""Line charts rendered as SVG on the server: no chart library, no script, CSP-friendly."""

from dataclasses import dataclass
from datetime import datetime

from apps.audit.models import StorageSample
from controlpanel.formatting import humanize_bytes

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 220, 70, 24, 10


@dataclass
class Chart:
    points: str  # the SVG polyline "x,y x,y ..."
    y_labels: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    empty: bool
    dots: list[tuple[float, float]] | None = None  # markers, so one or a few samples still show
    width: int = WIDTH
    height: int = HEIGHT


def bytes_chart(*, domain: str, subject: str, limit: int = 200) -> Chart:
    """The last `limit` samples of one subject, oldest to newest (one query)."""
    rows = list(
        StorageSample.objects.filter(domain=domain, subject=subject)
        .order_by("-sampled_at")
        .values_list("sampled_at", "total_bytes")[:limit]
    )
    rows.reverse()
    return line_chart(rows)


def line_chart(rows: list[tuple[datetime, int]]) -> Chart:
    if not rows:
        return Chart(points="", y_labels=[], x_labels=[], empty=True)
    times = [t.timestamp() for t, _ in rows]
    values = [v for _, v in rows]
    t0, t1 = min(times), max(times)
    top = max(values)
    scale = top or 1  # all zero: a flat line along the bottom
    plot_w, plot_h = WIDTH - PAD_LEFT - 10, HEIGHT - PAD_BOTTOM - PAD_TOP

    def x(t: float) -> float:
        return PAD_LEFT + (plot_w * (t - t0) / (t1 - t0) if t1 > t0 else plot_w / 2)

    def y(v: float) -> float:
        return PAD_TOP + plot_h - plot_h * v / scale

    coordinates = [(x(t), y(v)) for t, v in zip(times, values, strict=True)]
    points = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coordinates)
    # Nothing held has one label; a label never claims bytes no sample reached ("1 B").
    y_labels = [(y(top * f), humanize_bytes(top * f)) for f in (0, 0.5, 1)] if top else [(y(0), "0 B")]
    x_labels = [(x(t0), rows[0][0].strftime("%m-%d %H:%M")), (x(t1), rows[-1][0].strftime("%m-%d %H:%M"))]
    dots = coordinates if len(coordinates) <= 60 else None
    return Chart(points=points, y_labels=y_labels, x_labels=x_labels, empty=False, dots=dots)
