"""Errors of the stage runner.  `StageInputError` means bad input: the CLI prints its
message on one line and exits 2.  `StageRunError` means automl ran and failed: exit 1."""


class StageInputError(Exception):
    """A config value, dataset, checkpoint or saved_model is wrong or missing (exit 2)."""


class StageRunError(Exception):
    """The automl subprocess failed (exit 1); the message names the log to read."""
