"""Benchmark: inspecting a local volume against `du -sb` plus `find | wc -l` over the same
tree, in the same run, and print the ratio.

    .venv/bin/python bench/inspect.py                  # 100,000 files in 1,000 folders
    .venv/bin/python bench/inspect.py --files 5000 --folders 50   # a quick smoke run

Our inspection does more than the baseline (per-folder sums, extensions, the largest
files, layout rules with a glob, one Inspection row and its findings in a temp SQLite
database), in one streaming pass. Target: within 3x of the baseline. Peak memory of the
process is printed too, to show the walk does not hold the entries.
"""

import os
import sys

# This file is named like the standard library's `inspect`, which Django imports: take
# bench/ off the path before anything else is imported, and put the project root on it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 3.0


def setup_django(workdir: Path) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlpanel.settings",
            "VAR_DIR": str(workdir),
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "SESSIONS_VOLUME_URL": f"local://{workdir / 'sessions'}",
            "MIX_MEDIA_DIR": str(workdir / "media"),
            "MIX_OUTPUTS_DIR": str(workdir / "outputs"),
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build_tree(root: Path, *, files: int, folders: int) -> int:
    """`folders` folders two levels deep (group/folder), `files` files spread across them."""
    paths = []
    for f in range(folders):
        folder = root / f"group{f % 10:02d}" / f"folder{f:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder)
    total = 0
    for i in range(files):
        size = 100 + (i * 37) % 4000
        ext = (".npz", ".json", ".pt", ".log")[i % 4]
        with open(paths[i % folders] / f"file{i:06d}{ext}", "wb") as out:
            out.write(b"\0" * size)
        total += size
    return total


def baseline(root: Path) -> tuple[float, int, int]:
    started = time.perf_counter()
    du = subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True, check=True)
    # find | wc -l, piped without a shell
    find = subprocess.Popen(["find", str(root)], stdout=subprocess.PIPE)
    lines = subprocess.run(["wc", "-l"], stdin=find.stdout, capture_output=True, text=True, check=True)
    find.stdout.close()
    find.wait()
    elapsed = time.perf_counter() - started
    return elapsed, int(du.stdout.split()[0]), int(lines.stdout.strip())


def ours(volume) -> tuple[float, object]:
    from apps.volumes.services import volume_inspect

    started = time.perf_counter()
    inspection = volume_inspect(volume=volume, actor="bench")
    return time.perf_counter() - started, inspection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3, help="take the median of this many runs of each")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        workdir = Path(tmp)
        setup_django(workdir)
        from apps.volumes.models import Volume
        from apps.volumes.services import layout_preset_import

        root = workdir / "volumes" / "bench"  # VAR_DIR/volumes/: the one place in VAR_DIR a volume may be
        print(f"building {args.files:,} files in {args.folders:,} folders under {root} ...", flush=True)
        expected_bytes = build_tree(root, files=args.files, folders=args.folders)
        volume = Volume.objects.create(name="bench", url=f"local://{root}", folder_depth=3)
        layout_preset_import(volume=volume, preset="volume-cache", actor="bench")

        # Warm the page cache once so neither side pays for the first read from disk.
        baseline(root)
        base_runs, our_runs = [], []
        inspection = None
        for _ in range(args.repeats):
            seconds, du_bytes, find_lines = baseline(root)
            base_runs.append(seconds)
            seconds, inspection = ours(volume)
            our_runs.append(seconds)

        base, mine = statistics.median(base_runs), statistics.median(our_runs)
        assert inspection.total_files == args.files, (inspection.total_files, args.files)
        assert inspection.total_bytes == expected_bytes, (inspection.total_bytes, expected_bytes)
        ratio = mine / base if base else float("inf")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"tree: {args.files:,} files, {inspection.total_folders:,} folders, {expected_bytes:,} bytes")
        print(f"du -sb: {du_bytes:,} bytes (with folder blocks); find | wc -l: {find_lines:,} entries")
        print(f"baseline du -sb + find | wc -l: {base:.3f} s (median of {args.repeats})")
        print(f"inspection (walk, rules, store):  {mine:.3f} s (median of {args.repeats})")
        print(f"ratio: {ratio:.2f}x (target within {TARGET_RATIO:g}x) -> {'OK' if ratio <= TARGET_RATIO else 'SLOW'}")
        print(f"peak memory of this process: {peak_mb:.0f} MB; folders kept: {len(inspection.folders):,}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
