"""Dates as users type them: YYYY-MM-DD only.

Python 3.11's ``date.fromisoformat`` also takes 20230628 and 2023-W26-3, which a user typing
a date almost never meant; every command-line option and app field that reads a day goes
through ``iso_date`` so they all refuse the same texts with the same words.
"""

from __future__ import annotations

import datetime as dt
import re


def iso_date(text: str) -> dt.date:
    """The day ``text`` names, or ValueError saying why (``<text>: not YYYY-MM-DD...``)."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ValueError(f"{text}: not YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text}: not YYYY-MM-DD (no such day)") from None
