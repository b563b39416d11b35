import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture(scope="session")
def pgstac():
    """A real STAC API (stac-fastapi-pgstac on PostgreSQL/PostGIS) on 127.0.0.1."""
    from tests.servers import PgStacServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/system-deps.sh installs it as root)")
    server = PgStacServer()
    try:
        yield server.start()
    finally:
        server.stop()
