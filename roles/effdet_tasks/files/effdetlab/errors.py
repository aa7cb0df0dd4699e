"""Exceptions with messages meant to be read by a person at a terminal."""


class ConversionError(Exception):
    """Base class: the conversion cannot go on. The CLI prints the message and exits 2."""


class DatasetNotFoundError(ConversionError):
    """The dataset folder (or a required sub-folder / split file) does not exist."""


class CorruptXMLError(ConversionError):
    """An annotation XML file cannot be parsed (raised only with --strict)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"corrupt annotation XML {path}: {detail}")
        self.path = path
        self.detail = detail


class LabelMapError(ConversionError):
    """A label map file is malformed (duplicate ids/names, id 0, unreadable)."""


class NumClassesMismatchError(ConversionError):
    """--num-classes does not match the label map."""
