"""Errors that name the input at fault.

Every user-facing failure (a malformed dataset row, an unknown model layout, a letter that is not
one token, a missing file, an impossible config value) raises a subclass of `InputError` whose
message names the file, row or value, so that a Snakemake log says what to fix.
"""


class InputError(ValueError):
    """Bad user input; the message names the file / row / value."""


class DatasetError(InputError):
    """A raw dataset file or row is malformed or inconsistent."""

    def __init__(self, message: str, *, file=None, row=None):
        where = ""
        if file is not None:
            where = f"{file}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.file = file
        self.row = row


class LetterTokenError(InputError):
    """An option letter is not exactly one token of the tokenizer."""


class ModelLoadError(InputError):
    """A model's weights or tokenizer cannot be read (truncated, corrupt); names the file."""


class UnknownLayoutError(InputError):
    """The model class has no registered FFN layout."""


class AttributionError(RuntimeError):
    """Attribution produced NaN / infinite scores or otherwise failed for a query."""


class NonFiniteError(ArithmeticError):
    """A probability or score is NaN or infinite; the message names the query and prompt (and
    the file, when it was read from one)."""


class OutputError(OSError):
    """An output could not be written (a full disk, a quota...); the message names the file."""
