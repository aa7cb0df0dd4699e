"""Small mutable record classes without `dataclasses` (Python 3.7+).

The stage runner and the converter run inside the lab container, whose python3 is
3.6 for the TF 2.1 image profile.  A subclass of `Record` writes its own `__init__`
(keyword parameters, in field order, with their defaults); the field names are read
from that signature once, and `Record` supplies what `@dataclass` generated:
`repr` (`Name(a=1, b='x')`), `==` (same class and equal fields) and no hash.
"""
import inspect
from typing import Any, Dict, Tuple


class Record:
    _fields: Tuple[str, ...] = ()
    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like @dataclass

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)  # type: ignore[call-arg]
        if "__init__" in cls.__dict__:
            cls._fields = tuple(list(inspect.signature(cls.__init__).parameters)[1:])

    def _astuple(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def _asdict(self) -> Dict[str, Any]:
        """Fields and values in field order (shallow: values are not copied)."""
        return {f: getattr(self, f) for f in self._fields}

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is self.__class__:
            return self._astuple() == other._astuple()
        return NotImplemented

    def __repr__(self) -> str:
        return "{}({})".format(type(self).__qualname__,
                               ", ".join("{}={!r}".format(f, getattr(self, f)) for f in self._fields))
