"""The helpers every list page draws once or twice per row."""

from datetime import UTC, datetime, timedelta, timezone

from apps.dashboard.templatetags.panel import age, badge, humanize_bytes, utc


def test_times_are_shown_in_utc_whatever_zone_they_carry():
    moment = datetime(2026, 11, 23, 9, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert utc(moment) == "2026-11-23 07:05"
    assert utc(moment, "seconds") == "2026-11-23 07:05:07"
    assert utc(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == "2026-01-02 03:04"


def test_no_time_draws_nothing_so_default_can_fill_in():
    assert utc(None) == ""
    assert utc("2026-11-23") == ""


def test_sizes_are_humanised_and_unknown_is_a_dash():
    assert humanize_bytes(None) == "—"
    assert humanize_bytes(512) == "512 B"
    assert humanize_bytes(1536) == "1.5 KiB"
    assert humanize_bytes(5 * 1024**3) == "5.0 GiB"


def test_a_badge_says_its_status_in_words_and_escapes_it():
    assert badge("running") == '<span class="badge badge-running">running</span>'
    assert "&lt;b&gt;" in badge("<b>")


def test_ages_show_the_two_largest_units():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert age(now - timedelta(days=3, hours=4, minutes=5), now) == "3 d 4 h"
    assert age(now - timedelta(hours=2, seconds=30), now) == "2 h"
    assert age(now - timedelta(minutes=5, seconds=59), now) == "5 min"
    assert age(now - timedelta(seconds=20), now) == "under a minute"
    assert age(now + timedelta(minutes=3), now) == "under a minute"  # a clock a little ahead
    assert age(None) == ""
