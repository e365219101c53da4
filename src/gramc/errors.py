"""The one base of every gramc exception: `GramcError`, with the exit code `gramc` returns for it.

`gramc.cli.main` prints any GramcError as `gramc <command>: error: <message>` and exits with its
`exit_code`; no library traceback reaches the user for bad input. Subclasses keep their library
base (ValueError, RuntimeError) so existing `except ValueError` code keeps working.
"""

from __future__ import annotations


class GramcError(Exception):
    """Bad input, a refused operation or a run that cannot go on; the message says what to do."""

    exit_code: int = 2


class DataError(GramcError, ValueError):
    """Bad input data; the message names the file, the line and what was expected."""


class OwnershipError(DataError):
    """An output path holds something gramc did not write (or is one of the command's inputs)."""


class AssetMismatchError(GramcError):
    """A checkpoint is used with assets (data, tokenizer, IDs, GCN, passages) it was not trained with."""


class MissingAssetError(GramcError):
    """An asset an existing run needs (tokenizer, IDs, GCN table, similar items) is missing; loading a
    run never rebuilds one. The message names the file and the command that builds it."""


class OutputBusyError(GramcError):
    """Another process is writing this output (it holds its lock, gramc.lock); the message names
    that process. Exit 75 (EX_TEMPFAIL): the same command may succeed later."""

    exit_code = 75
