import pytest
import time_machine

from tests.mixjobs.helpers import NOW


@pytest.fixture
def clock():
    """Time stands still at NOW: TTLs and stalls are judged against a known instant."""
    with time_machine.travel(NOW, tick=False):
        yield
