"""Two processes racing for the same object on PostgreSQL: one wins, the other is told."""

import pytest

pytestmark = [pytest.mark.scaleout, pytest.mark.postgres, pytest.mark.redis]

RACE = """
import sys, time
from apps.audit.services import operation_create
from controlpanel.errors import Busy
start = {start}
time.sleep(max(0.0, start - time.time() - 0.005))  # asleep until just before the start
while time.time() < start:
    pass
for round_no in range({rounds}):
    try:
        operation_create(kind="demo.race", target_type="thing", target_id=f"t{{round_no}}", actor="proc-{who}")
        print("won", round_no)
    except Busy as exc:
        print("busy", round_no, exc)
"""


def test_two_processes_creating_the_same_operation_get_one_winner_each_round(stack):
    import time

    rounds = 25
    start = time.time() + 4  # both processes are up and waiting before the first round
    racers = [stack.spawn_shell(RACE.format(start=start, rounds=rounds, who=who)) for who in "ab"]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    for racer, (_, stderr) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, stderr
    wins = [line for out, _ in outputs for line in out.splitlines() if line.startswith("won")]
    busy = [line for out, _ in outputs for line in out.splitlines() if line.startswith("busy")]
    assert len(wins) == rounds, outputs
    assert len(busy) == rounds and all("already has demo.race in progress" in line for line in busy)
    count = stack.shell(
        "from apps.audit.models import Operation; print(Operation.objects.filter(kind='demo.race').count())"
    )
    assert int(count) == rounds
