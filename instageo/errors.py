"""Every failure a user can act on has a class here; the CLI maps classes to exit codes.

Library code raises these and never calls ``sys.exit``. Messages name the recipe field or
file, the bad value and, where there is one, the fix.
"""

from __future__ import annotations

import errno


class InstageoError(Exception):
    """Base of all instageo errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class RecipeError(InstageoError):
    """The recipe (or a value given with --set) is invalid. Holds every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InputError(InstageoError):
    """An input file the recipe points at (observations, rasters, checkpoints) is unusable."""

    exit_code = 2


class DataSourceError(InstageoError):
    """A data source is unreachable or returned nothing usable."""

    exit_code = 3


class RunLockedError(InstageoError):
    """Another instarun process holds the runs folder of this recipe."""

    exit_code = 1


class StageError(InstageoError):
    """A stage failed for a reason that is not the user's input (a bug or an environment issue)."""

    exit_code = 1


class VerificationError(InstageoError):
    """`instarun verify` rebuilt chips that differ from the lock file."""

    exit_code = 1


class DiskFullError(InstageoError):
    """A write failed for want of space: a full disk, a quota or a file size limit."""

    exit_code = 1


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full(exc: BaseException | None) -> OSError | None:
    """The OSError saying there is no room to write behind ``exc`` (or its causes), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def not_writable_message(error: OSError) -> str:
    import re

    # an all-or-nothing write's temporary (.<name>.tmp-<pid>) is named as the file it makes
    path = re.sub(r"(^|/)\.([^/]+)\.tmp-\d+$", r"\1\2", str(error.filename))
    if path.endswith(".lock.json"):
        advice = "the lock file is written beside the recipe: copy the recipe to a writable folder"
    else:
        advice = "choose another --runs-dir, or make it writable"
    return f"cannot write {path}: {error.strerror} (a read-only or protected place; {advice})"


def disk_full_message(error: OSError, where) -> str:
    what = f"{error.strerror or error}" + (f" writing {error.filename}" if error.filename else "")
    return (f"no room to write in {where} ({what}); free some space (or raise the limit) and run "
            "again: the stages already finished are kept")
