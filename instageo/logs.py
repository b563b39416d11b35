"""What the runner and the CLI agree on about log records, and the console's log handler."""

from __future__ import annotations

import contextlib
import logging
import sys

from instageo.redact import RedactingFilter

# a log record's extra: for the run's log file, not the console (a failure's traceback)
FILE_ONLY = "file_only"


@contextlib.contextmanager
def console():
    """Progress bars and instageo's log lines on the console while a command works."""
    from instageo.progress import Progress

    progress = Progress()
    handler = _console_handler(progress)
    logging.getLogger("instageo").addHandler(handler)
    try:
        yield progress
    finally:
        logging.getLogger("instageo").removeHandler(handler)


def _console_handler(progress) -> logging.Handler:
    if progress.console is not None:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=progress.console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(RedactingFilter())
    # the failure's traceback goes to the run's log only: the console gets one line (cli.main)
    handler.addFilter(lambda record: not getattr(record, FILE_ONLY, False))
    return handler
