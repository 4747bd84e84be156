"""The shape of a robustness case: a hostile or faulty input and the outcome a careful user expects."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Refused:
    """A clear refusal: the message names the ``problem`` and the ``fix`` (regular expressions)."""

    problem: str
    fix: str = ""

    def check(self, message: str) -> None:
        assert re.search(self.problem, message, re.I | re.S), f"problem /{self.problem}/ not named in: {message}"
        assert re.search(self.fix, message, re.I | re.S), f"fix /{self.fix}/ not given in: {message}"
        assert "weights_only=False" not in message, message
        assert "Traceback" not in message, message


@dataclass(frozen=True)
class Works:
    """Keeps working and loses nothing; ``note`` says what must still hold, ``reported`` a message it must print."""

    note: str = ""
    reported: str = ""


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable = field(repr=False)
    expect: Refused | Works


def params(cases: list[Case]):
    """``pytest.mark.parametrize`` arguments: one test id per case."""
    import pytest

    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return pytest.mark.parametrize("case", cases, ids=ids)
