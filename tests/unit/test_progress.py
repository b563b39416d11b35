"""Progress without a terminal: a long stage's work is logged every tenth with an ETA from
that work; short work prints nothing; the stages bar has no ETA column."""

import logging

from instageo import progress as progress_module
from instageo.progress import Progress


def test_without_a_terminal_a_line_every_tenth_after_the_quiet_seconds(monkeypatch, caplog):
    clock = iter(range(0, 10_000, 1))  # one second per call
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: float(next(clock)))
    caplog.set_level(logging.INFO, "instageo")
    with Progress(enabled=False).bar("chips", 100) as bar:
        for _ in range(100):
            bar.step()
    lines = [r.getMessage() for r in caplog.records]
    assert 9 <= len(lines) <= 11 and lines[-1].startswith("  chips: 100/100 (100%)")
    assert lines[0] == "  chips: 10/100 (10%), 0:00:10 elapsed, ETA 0:01:30"  # 1 s an item: 90 s to go


def test_short_work_prints_nothing(caplog):
    caplog.set_level(logging.INFO, "instageo")
    assert list(Progress(enabled=False).track(range(50), description="tiles")) == list(range(50))
    assert not caplog.records


def test_the_stages_bar_shows_no_eta_and_item_bars_do():
    from rich.console import Console

    shown = Progress(enabled=True)
    shown.console = Console(file=open("/dev/null", "w"), force_terminal=True)
    stages = shown.add("stages", 8, eta=False)
    chips = shown.add("  chips", 100)
    tasks = {t.id: t for t in shown._bars.tasks}
    eta_column = shown._bars.columns[4]
    assert str(eta_column.render(tasks[stages])) == ""
    assert str(eta_column.render(tasks[chips])).startswith("ETA")
