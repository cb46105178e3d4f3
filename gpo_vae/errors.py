"""The errors a user can fix: bad input, a config value, a filter that leaves nothing.

Every such error derives from :class:`UserError` and carries a complete message: the file,
column, gene or key at fault and what to do. The workflow's scheduler (``tasks/scheduler.py``)
prints that message as the run's last line, without a task traceback; ``--debug`` (or
``GPO_VAE_DEBUG=1``) brings the traceback back. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to change; printed without a traceback."""


class InputFileError(UserError, FileNotFoundError):
    """A file named on the command line does not exist or cannot be used."""


class DamagedFileError(UserError, ValueError):
    """A file the pipeline wrote (or was given) cannot be read; the message says to restore or delete it."""


class DataContractError(UserError, ValueError):
    """A dataset does not meet the raw-data contract; the message names the file and the fix."""
