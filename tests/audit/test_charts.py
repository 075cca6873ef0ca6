"""The server-drawn charts label only what the samples say."""

from datetime import UTC, datetime, timedelta

from apps.audit.charts import line_chart

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_an_all_zero_chart_is_one_flat_line_labelled_zero():
    chart = line_chart([(T0, 0), (T0 + timedelta(hours=1), 0), (T0 + timedelta(hours=2), 0)])
    assert [label for _, label in chart.y_labels] == ["0 B"]
    ((bottom, _),) = chart.y_labels
    assert {float(point.split(",")[1]) for point in chart.points.split()} == {bottom}


def test_a_chart_labels_zero_half_and_its_highest_sample():
    chart = line_chart([(T0, 0), (T0 + timedelta(hours=1), 5 * 1024 * 1024)])
    assert [label for _, label in chart.y_labels] == ["0 B", "2.5 MiB", "5.0 MiB"]
    assert not chart.empty and chart.dots and len(chart.dots) == 2
