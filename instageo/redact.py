"""Secrets never leave the process: signed URLs' signatures, tokens and credentials are
replaced by "REDACTED" in every log line, error message and report the run writes.

Planetary Computer signs hrefs with SAS query strings (``?st=...&se=...&sig=...``), S3 with
``X-Amz-*`` parameters, Earthdata with bearer tokens; GDAL quotes the URL it failed on.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMETERS = ("sig", "se", "st", "sp", "sv", "sr", "skoid", "sktid", "skt", "ske", "sks", "skv",
                     "token", "access_token", "api_key", "apikey", "signature", "x-amz-signature",
                     "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential")
_PARAMETER = re.compile(r"(?i)([?&](?:%s)=)[^&#\s'\"]+" % "|".join(re.escape(p) for p in SECRET_PARAMETERS))
_HEADER = re.compile(r"(?i)\b(authorization|x-api-key)(\s*[:=]\s*)(bearer\s+|basic\s+)?[^\s,'\"}]+")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")


def redact(text: str) -> str:
    """``text`` with secret query parameters, auth headers and URL passwords replaced."""
    text = _PARAMETER.sub(r"\1REDACTED", text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}REDACTED", text)
    return _USERINFO.sub(r"\1REDACTED@", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message of every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
