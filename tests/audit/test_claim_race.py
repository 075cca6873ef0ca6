"""Two worker processes claiming the same pending operations on PostgreSQL: each one is
claimed once, by one of them, never by both."""

import json
import time

import pytest

from tests.scaleout.stack import PanelStack

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROUNDS = 30

CREATE = """
import json
from apps.audit.names import Kind, TargetType
from apps.audit.services import operation_create
ids = [
    operation_create(kind=Kind.POD_STOP, target_type=TargetType.POD, target_id=f"race-{{n}}", actor="tests").pk
    for n in range({rounds})
]
print(json.dumps(ids))
"""

# Both processes wait for the same instant before each round, so every claim races.
CLAIM = """
import time
from apps.audit.services import operation_claim
start = {start}
for round_no, operation_id in enumerate({ids}):
    time.sleep(max(0.0, start + round_no * 0.05 - time.time() - 0.005))  # asleep until just before
    while time.time() < start + round_no * 0.05:
        pass
    if operation_claim(operation_id=operation_id) is not None:
        print("won", operation_id)
"""

COUNT_RUNNING = """
from apps.audit.models import Operation
print(Operation.objects.filter(target_id__startswith="race-", status="running").count())
"""


@pytest.fixture
def stack(postgres_url, redis_url, tmp_path):
    with PanelStack(postgres_url=postgres_url, redis_url=redis_url, var_dir=tmp_path / "stack") as panel:
        (tmp_path / "stack").mkdir(exist_ok=True)
        yield panel


def test_only_one_of_two_racing_workers_claims_each_operation(stack):
    ids = json.loads(stack.shell(CREATE.format(rounds=ROUNDS)).strip().splitlines()[-1])
    assert len(ids) == ROUNDS
    start = time.time() + 4  # both processes are up and waiting before the first round
    racers = [stack.spawn_shell(CLAIM.format(start=start, ids=ids)) for _ in range(2)]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    for racer, (_, stderr) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, stderr
    won = [int(line.split()[1]) for out, _ in outputs for line in out.splitlines() if line.startswith("won")]
    assert sorted(won) == sorted(ids), outputs  # every operation claimed, none twice
    assert int(stack.shell(COUNT_RUNNING).strip()) == ROUNDS
