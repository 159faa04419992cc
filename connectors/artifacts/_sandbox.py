"""The sandbox templates render in: Jinja2's ``ImmutableSandboxedEnvironment`` (lists, dicts and
sets cannot be changed in place), stricter about attributes, and bounded in time and in the size
of the values a template can build.

Jinja2's sandbox keeps a template from Python's internals. It does not bound what a template
builds: ``{{ "x" * 10**10 }}``, a string doubled in a recursive macro, ``"x".ljust(10**10)`` or
``range(10**5)|join("x" * 10**6)`` would exhaust the proxy's memory. Here:

- an unsafe attribute (``{{ ''.__class__ }}``) raises SecurityError at once, where the sandbox
  alone renders it as an empty string until something uses it;
- ``*`` and ``**``, the string methods and filters whose result size an argument sets (padding,
  ``join``, ``replace``, ``format``, ``indent``, ``batch``...) are refused when the result would
  exceed ``max_value`` items; ``+`` and ``~`` results are checked once built (they at most double
  what was already allowed);
- every call, operator and concatenation checks the deadline, so a runaway loop ends with
  DeadlineExceeded instead of holding its thread.
"""

from __future__ import annotations

import functools
import operator
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connectors._lazy import lazy_import
from server import errors

if TYPE_CHECKING:
    from jinja2 import compiler, exceptions, sandbox
else:  # imported by the first call (in its worker thread), not by discovery
    compiler = lazy_import("jinja2.compiler")
    exceptions = lazy_import("jinja2.exceptions")
    sandbox = lazy_import("jinja2.sandbox")

__all__ = ["environment"]

# str methods and filters whose result's size their arguments set; those a number pads or counts out.
_SIZED_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "join", "replace"})
_SIZED_METHODS |= {"format", "format_map"}
_SIZED_FILTERS = (
    *("center", "indent", "batch", "slice", "join", "replace", "format"),
    *("string", "tojson", "pprint", "urlencode", "xmlattr"),  # the text of a whole value
)
_PADDING = frozenset({"ljust", "rjust", "center", "zfill", "batch", "slice"})
_FORMAT_WIDTHS = re.compile(r"%[#0 +-]*(\d*)(?:\.(\d+))?|\{[^{}:]*:[^{}\d]*(\d*)(?:[,_]?\.(\d+))?")
_DEPTH = 32


def _size(value: Any, depth: int = 0) -> int:
    """About the length of ``value``'s text: characters of strings, those of every item of lists,
    tuples, sets and dicts (each reference counted: a list may hold one long string many times)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, range):
        return len(value)
    if depth < _DEPTH:
        if isinstance(value, dict):
            return 2 + sum(_size(k, depth + 1) + _size(v, depth + 1) + 4 for k, v in value.items())
        if isinstance(value, list | tuple | set | frozenset):
            return 2 + sum(_size(item, depth + 1) + 2 for item in value)
    return 8


def _estimate(name: str, target: Any, args: tuple[Any, ...]) -> int:
    """Roughly, an upper bound of the size of ``target.<name>(*args)`` (or of the filter ``name``
    on ``target``), from the arguments alone (an unsized iterable among them is made a list)."""
    numbers = [abs(a) for a in args if isinstance(a, int) and not isinstance(a, bool)]
    texts = [a for a in args if isinstance(a, str)]
    size = _size(target)
    if name in _PADDING:
        return max([size, *numbers])
    if name == "join":  # sep.join(items) as a method; items|join(sep) as a filter
        items, separator = (args[0], target) if isinstance(target, str) else (target, (texts or [""])[0])
        count = len(items) if isinstance(items, list | tuple | range) else 0
        return count * len(separator) + sum(_size(item) for item in (items if count else ()))
    if not isinstance(target, str):
        return size
    if name == "replace" and len(texts) >= 2:
        old, new = texts[0], texts[1]
        return size + (target.count(old) if old else size + 1) * len(new)
    if name == "expandtabs" and numbers:
        return size + target.count("\t") * numbers[0]
    if name == "indent" and numbers:
        return size + (target.count("\n") + 1) * numbers[0]
    if name in ("format", "format_map"):
        widths = [int(n) for match in _FORMAT_WIDTHS.findall(target) for n in match if n]
        return size + sum(_size(a) for a in args) + sum(widths)
    return size


def _listed(value: Any) -> Any:
    """``value``, or its items as a list when it is an iterable of unknown length (a generator)."""
    if isinstance(value, str | bytes | list | tuple | range | dict | set | frozenset) or not hasattr(
        value, "__iter__"
    ):
        return value
    return list(value)


def _code_generator(check: str) -> type[Any]:
    class CodeGenerator(compiler.CodeGenerator):
        """Wraps every ``~`` concatenation in ``environment.<check>(...)``."""

        def visit_Concat(self, node: Any, frame: Any) -> None:
            self.write(f"environment.{check}(")
            super().visit_Concat(node, frame)
            self.write(")")

    return CodeGenerator


@functools.cache
def _environment_class() -> type[Any]:
    """The sandbox with this module's rules (made once, on first use: Jinja2 is imported lazily)."""

    class Environment(sandbox.ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+"})
        code_generator_class = _code_generator("bounded")

        def __init__(self, deadline: float, max_value: int) -> None:
            super().__init__(
                autoescape=True, loader=None, auto_reload=False, cache_size=0, finalize=self.shown
            )
            self.deadline = deadline
            self.max_value = max_value
            for name in _SIZED_FILTERS:
                self.filters[name] = self._bounded_filter(name, self.filters[name])

        def check_time(self) -> None:
            if time.monotonic() > self.deadline:
                msg = "The template was still rendering when the call's deadline came."
                raise errors.DeadlineExceeded(msg)

        def refuse_size(self, what: str, size: int) -> None:
            if size > self.max_value:
                msg = f"{what} would make a value of about {size} items, more than {self.max_value}"
                raise exceptions.SecurityError(msg)

        def bounded(self, value: Any) -> Any:
            self.check_time()
            self.refuse_size("a concatenation", _size(value))
            return value

        def shown(self, value: Any) -> Any:
            """``finalize``: every ``{{ value }}`` before it becomes text."""
            if not isinstance(value, str):
                self.refuse_size("showing a value", _size(value))
            return value

        def _bounded_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
            # A filter marked pass_context (or eval context, environment) gets that first; wraps()
            # copies the mark, so the compiled template passes it to the wrapper as well.
            passed = getattr(function, "jinja_pass_arg", None) is not None

            @functools.wraps(function)
            def bounded_filter(*args: Any, **kwargs: Any) -> Any:
                first = 1 if passed else 0
                value, rest = _listed(args[first]), args[first + 1 :]
                self.refuse_size(f"the filter {name}", _estimate(name, value, (*rest, *kwargs.values())))
                return function(*args[:first], value, *rest, **kwargs)

            return bounded_filter

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            msg = f"access to attribute {attribute!r} of a {type(obj).__name__!r} value is unsafe"
            raise exceptions.SecurityError(msg)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            __self.check_time()
            method = getattr(__obj, "__wrapped__", __obj)
            target = getattr(method, "__self__", None)
            name = getattr(method, "__name__", "")
            if isinstance(target, str) and name in _SIZED_METHODS:
                args = tuple(_listed(a) for a in args)
                __self.refuse_size(f"str.{name}", _estimate(name, target, (*args, *kwargs.values())))
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
            self.check_time()
            if op == "+":
                return self.bounded(operator.add(left, right))
            if op == "*":
                for sized, times in ((left, right), (right, left)):
                    if isinstance(times, int) and isinstance(sized, str | bytes | list | tuple):
                        self.refuse_size("a repetition", _size(sized) * times)
                return operator.mul(left, right)
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self.refuse_size("a power", int(right * abs(left).bit_length() / 3.32))  # its digits
            return operator.pow(left, right)

    return Environment


def environment(deadline: float, max_value: int) -> Any:
    """A sandboxed environment for one rendering: no loader, autoescaping on, nothing cached."""
    return _environment_class()(deadline, max_value)
