"""Templates: Jinja2 text rendered to HTML in the sandbox (``_sandbox``), with autoescaping, no
files, and limits.

Besides the sandbox's rules, ``include``, ``import`` and ``extends`` are refused before rendering:
there is no loader, and a template is self-contained (macros live in the same text). The output
may not exceed ``max_chars`` characters, nor may any value the template builds. A template's name
instead of its text (``invoice.html``, as GSA-TTS's connector took) gets an error saying so.

Any failure is ``ArtifactTemplateError`` (400), its message naming the line where Jinja2 knows it;
too much output is ``ArtifactTooLarge``; the deadline, ``DeadlineExceeded``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors._lazy import lazy_import
from server import errors

from . import _sandbox

if TYPE_CHECKING:
    from jinja2 import exceptions, nodes
else:  # imported by the first call (in its worker thread), not by discovery
    exceptions = lazy_import("jinja2.exceptions")
    nodes = lazy_import("jinja2.nodes")

__all__ = ["TEMPLATE_ERROR", "TOO_LARGE", "render"]

TEMPLATE_ERROR = "ArtifactTemplateError"
TOO_LARGE = "ArtifactTooLarge"
_FILE_NAME = re.compile(r"[\w./-]+\.(?:html?|jinja2?|j2|tpl|txt)", re.IGNORECASE)


def template_error(message: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(message, error_code=TEMPLATE_ERROR)


def _refuse_references(tree: Any) -> None:
    """``include``, ``import`` and ``extends`` would need files or other templates: refused."""
    for kind, word in ((nodes.Extends, "extends"), (nodes.Include, "include"), (nodes.Import, "import")):
        for node in tree.find_all(kind):
            msg = (
                f"The template uses {word} (line {node.lineno}): templates are self-contained here; "
                "put macros and blocks in the same template."
            )
            raise template_error(msg)
    for node in tree.find_all(nodes.FromImport):
        msg = (
            f"The template uses import (line {node.lineno}): templates are self-contained here; "
            "put macros in the same template."
        )
        raise template_error(msg)


def render(text: str, variables: Mapping[str, Any], *, deadline: float, max_chars: int) -> str:
    """The HTML ``text`` renders to with ``variables``, in the sandbox (see the module docstring).

    Raises:
        server.errors.InvalidArgument: ArtifactTemplateError (syntax, refused constructs, a
            failure while rendering).
        server.errors.FailedPrecondition: ArtifactTooLarge (more than ``max_chars`` characters).
        server.errors.DeadlineExceeded: the deadline came first.
    """
    if _FILE_NAME.fullmatch(text.strip()):
        msg = (
            f"template must be the template's text, not the name of a file ({text.strip()[:80]!r}): "
            "this connector reads no files; pass the template itself."
        )
        raise template_error(msg)
    environment = _sandbox.environment(deadline, max_chars)
    try:
        tree = environment.parse(text)
        _refuse_references(tree)
        template = environment.from_string(tree)
        pieces: list[str] = []
        size = 0
        for piece in template.generate(variables):
            size += len(piece)
            if size > max_chars:
                msg = (
                    f"The rendered template is longer than {max_chars} characters "
                    "(CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS)."
                )
                raise errors.FailedPrecondition(msg, error_code=TOO_LARGE)
            pieces.append(piece)
            environment.check_time()
    except errors.CommandError:
        raise
    except exceptions.TemplateSyntaxError as exc:
        msg = f"The template does not compile: {exc.message} (line {exc.lineno})."
        raise template_error(msg) from None
    except exceptions.SecurityError as exc:
        msg = f"The template was refused by the sandbox: {exc}."
        raise template_error(msg) from None
    except Exception as exc:  # whatever the template's own code raised: undefined values, 1/0, a bad filter
        msg = f"The template failed while rendering: {type(exc).__name__}: {str(exc)[:300]}."
        raise template_error(msg) from None
    return "".join(pieces)
