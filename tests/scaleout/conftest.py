import pytest

from tests.scaleout.stack import PanelStack


@pytest.fixture
def stack(postgres_url, redis_url, tmp_path):
    with PanelStack(postgres_url=postgres_url, redis_url=redis_url, var_dir=tmp_path / "stack") as panel:
        (tmp_path / "stack").mkdir(exist_ok=True)
        yield panel
