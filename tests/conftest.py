import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def run_tiny(folder: Path, *args: str) -> tuple[Path, dict]:
    """recipes/tiny.yaml run in ``folder`` (``args``: e.g. --until predict): its run folder and report."""
    import json
    import shutil

    from instageo.cli import main

    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), *args]) == 0
    run_dir = folder / "runs" / "tiny"
    return run_dir, json.loads((run_dir / "report.json").read_text())


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


@pytest.fixture
def browser(tmp_path):
    """Debian's chromium driven through its WebDriver (selenium + chromium-driver), every
    request off the machine sent to a recording proxy: (driver, proxy)."""
    import shutil

    from tests.servers import RecordingProxy

    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium and chromium-driver are not installed (scripts/system-deps.sh, as root)")
    with RecordingProxy() as proxy:
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--disable-sync", "--disable-extensions", "--disable-default-apps",
                     f"--proxy-server={proxy.url}",  # loopback (a served app) bypasses it, as by default
                     f"--user-data-dir={tmp_path / 'profile'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
        try:
            yield driver, proxy
        finally:
            driver.quit()


def off_machine_hosts(requests: list[str]) -> set[str]:
    """The hosts a page asked for through the recording proxy, less Chromium's own services
    (Google's, Debian's default search engine's start page), which call home despite the flags."""
    hosts = {request.split()[1].split("://")[-1].split("/")[0].split(":")[0] for request in requests}
    return {h for h in hosts if not h.endswith((".google.com", ".googleapis.com", ".gvt1.com", "duckduckgo.com"))}
