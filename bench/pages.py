"""Time each list page and the overview with a full database against the same page on an
empty database, in the same run, and print the ratios and query counts.

    .venv/bin/python bench/pages.py            # 10,000 pods, 100,000 mix jobs, 20,000 sessions
    .venv/bin/python bench/pages.py --scale 0.05   # a quick smoke run

Target: every page within 3x of its empty-database time, with the same number of queries.
Times are medians with the shared cache warm (as most views find it); the last column is the
full page's first view with the cache cleared, when it computes its cached summaries.
"""

import os
import sys

# bench/inspect.py is named like the standard library's `inspect`: take bench/ off the path
# before anything imports it, and put the project root there instead.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [ROOT, *(p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench"))]

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

PAGES = [
    "dashboard:overview",
    "dashboard:leaks",
    "dashboard:operations",
    "dashboard:audit",
    "pods:list",
    "separations:list",
    "mixjobs:list",
    "volumes:list",
]
FULL = {"pods": 10_000, "mixjobs": 100_000, "sessions": 20_000, "audit": 50_000}


def setup_django(workdir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "VAR_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "DEBUG": "1",
            "ALLOWED_HOSTS": "testserver,127.0.0.1",
            "MIX_MEDIA_DIR": str(workdir / "media"),
            "MIX_OUTPUTS_DIR": str(workdir / "outputs"),
            # The volume the seeded sessions are on, so the sessions pages show them.
            "SESSIONS_VOLUME_URL": f"local://{workdir / 'music-split-jobs-data'}",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def time_page(client, user, url: str, repeats: int) -> tuple[float, int, float]:
    """Median time of a page with its caches warm, its queries, and its time with them cold.

    The queries are counted on the cold page (the shared cache cleared first), so summaries a
    page keeps in the cache are counted too, and the count does not depend on when a cached
    summary happens to expire during the run."""
    from django.core.cache import cache
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    cache.clear()
    client.force_login(user)  # the login session may live in the cache just cleared
    reset_queries()  # a full query log (seeding, logging in) would hide the page's queries
    with CaptureQueriesContext(connection) as captured:
        start = time.perf_counter()
        response = client.get(url)
        cold = time.perf_counter() - start
    # Counted now: every request the client makes resets the connection's query log.
    queries = len(captured)
    assert response.status_code == 200, (url, response.status_code)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(samples), queries, cold


def seed(scale, counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        seeder = scale.SEEDERS.get(kind)
        if seeder is None:
            print(f"no seeder for {kind} yet")
            continue
        seeder(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full row counts")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        setup_django(Path(tmp))
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.urls import NoReverseMatch, reverse

        from tests import scale

        user = get_user_model().objects.create_superuser("bench", password=None)
        client = Client()
        client.force_login(user)
        urls = []
        for name in PAGES:
            try:
                urls.append((name, reverse(name)))
            except NoReverseMatch:
                print(f"skipping {name}: no such page")

        empty = {name: time_page(client, user, url, args.repeats) for name, url in urls}
        # Query counts are compared between a handful of rows and the full load: an empty
        # page skips fetching its rows, which is not growth.
        seed(scale, {kind: 3 for kind in FULL})
        few = {name: time_page(client, user, url, 1)[1] for name, url in urls}
        counts = {kind: max(1, int(n * args.scale)) for kind, n in FULL.items()}
        start = time.perf_counter()
        seed(scale, counts)
        print(f"seeded {counts} in {time.perf_counter() - start:.1f}s")
        # The seeders write in bulk, past the services that drop cached summaries on a write.
        from django.core.cache import cache

        cache.clear()
        full = {name: time_page(client, user, url, args.repeats) for name, url in urls}

        print(f"\n{'page':26} {'empty ms':>9} {'full ms':>9} {'ratio':>6} {'queries':>11} {'full cold ms':>13}")
        worst = 0.0
        constant = True
        for name, _ in urls:
            (t0, _, _), q0, (t1, q1, cold) = empty[name], few[name], full[name]
            ratio = t1 / t0 if t0 else float("inf")
            worst = max(worst, ratio)
            constant &= q0 == q1
            print(f"{name:26} {t0 * 1000:9.1f} {t1 * 1000:9.1f} {ratio:6.2f} {q0:>5} → {q1:<4} {cold * 1000:13.1f}")
        print(f"\nworst ratio {worst:.2f} (target ≤ 3.00); queries constant: {constant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
