"""restic's errors told as one line for people. `restic_lock_failure.stderr` is what Debian's
restic 0.14 printed when S3 kept answering 500 to the lock it wanted to write (captured through
`tests/fakes/s3_faults.py`; restic gave up after about two minutes of retries): no "Fatal"
line, a Go stack trace with the messages around it."""

from pathlib import Path

from apps.pods.stores.dedup import DedupStore

LOCK_FAILURE = (Path(__file__).parent / "restic_lock_failure.stderr").read_text()


def test_a_go_stack_trace_is_told_as_its_messages_outermost_first():
    error = DedupStore("dedup+s3://bucket/repo").error("backing up pod p1", LOCK_FAILURE)
    assert str(error) == (
        "snapshot store dedup+s3://bucket/repo failed backing up pod p1: unable to create lock in backend: "
        "client.PutObject: We encountered an internal error. Please try again."
    )


def test_a_fatal_line_is_still_what_is_told():
    stderr = (
        "some warning\nFatal: unable to open config file: Stat: 500 Internal Server Error\nIs there a repository?\n"
    )
    error = DedupStore("dedup+s3://bucket/repo").error("opening the repository", stderr)
    assert str(error).endswith(
        "opening the repository: Fatal: unable to open config file: Stat: 500 Internal Server Error"
    )
