"""Regular expressions written by administrators (queue filters, template parameter patterns),
run with a time limit.

Python's ``re`` backtracks without bound: a pattern with a nested repetition such as
``(a+)+$`` takes exponential time on a long subject that almost matches, and would hold a
panel worker, the CLI or a node's core for hours. Such patterns are compiled with the
``regex`` module, whose matching functions stop after ``timeout`` seconds; the pattern's
length is bounded too. A pattern that runs out of time is reported by name, as a
ValidationError, like a pattern that does not compile.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import regex

from .errors import ValidationError

MAX_PATTERN = 1000  # characters
MATCH_TIMEOUT = 0.5  # seconds for one subject: a sane pattern needs microseconds
TOTAL_TIMEOUT = 5.0  # seconds over every subject one pattern object is run on (a whole queue)


class PatternTimeout(ValidationError):
    """A user's regular expression took too long (catastrophic backtracking)."""


class UserPattern:
    """One user-supplied regular expression (``re`` syntax), compiled once, run with limits."""

    def __init__(self, pattern: str, what: str = "regular expression", ignore_case: bool = False) -> None:
        self.pattern, self.what = pattern, what
        if len(pattern) > MAX_PATTERN:
            raise ValidationError(f"{what} {pattern[:60]!r}...: too long ({len(pattern)} characters; "
                                  f"at most {MAX_PATTERN})")
        try:
            self.compiled = regex.compile(pattern, regex.VERSION0 | (regex.IGNORECASE if ignore_case else 0))
        except regex.error as exc:
            raise ValidationError(f"{what} {pattern!r}: bad regular expression: {exc}") from None
        self.spent = 0.0

    def search(self, text: str) -> bool:
        return self._run(self.compiled.search, text)

    def fullmatch(self, text: str) -> bool:
        return self._run(self.compiled.fullmatch, text)

    def _run(self, method: Callable[..., object], text: str) -> bool:
        timeout = min(MATCH_TIMEOUT, TOTAL_TIMEOUT - self.spent)
        if timeout <= 0:
            raise self._timeout()
        started = time.monotonic()
        try:
            return method(text, timeout=timeout) is not None
        except TimeoutError:
            raise self._timeout() from None
        finally:
            self.spent += time.monotonic() - started

    def _timeout(self) -> PatternTimeout:
        return PatternTimeout(
            f"{self.what} {self.pattern!r} takes too long to match (more than {MATCH_TIMEOUT:g} s on one "
            f"value, or {TOTAL_TIMEOUT:g} s in all): a nested repetition such as (a+)+ backtracks without end; "
            "simplify it (e.g. a+$)")
