"""Object name validation, with the API server's rules and its 422 error shape.

Most kinds take a DNS-1123 subdomain; namespaces a DNS-1123 label; services a DNS-1035 label.
Clients (and our agent's error handling) read both the message and ``details.causes``.
"""

from __future__ import annotations

import re

from .errors import SandboxError
from .resources import ResourceType

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"

# (regex, longest allowed, what a violation says), as the API server words them
_RULES = {
    "subdomain": (
        _SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        f"regex used for validation is '{_SUBDOMAIN}')",
    ),
    "label": (
        _LABEL,
        63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        f"regex used for validation is '{_LABEL}')",
    ),
    "dns1035": (
        _DNS1035,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
        "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        f"'abc-123', regex used for validation is '{_DNS1035}')",
    ),
}
_RULE_OF = {("", "namespaces"): "label", ("", "services"): "dns1035"}


def check_name(rt: ResourceType, name: str) -> None:
    """Raise 422 Invalid unless ``name`` is a valid name for objects of ``rt``."""
    pattern, longest, rule_text = _RULES[_RULE_OF.get((rt.group, rt.resource), "subdomain")]
    problems = []
    if len(name) > longest:
        problems.append(f"must be no more than {longest} characters")
    if not re.fullmatch(pattern, name):
        problems.append(rule_text)
    if not problems:
        return
    causes = [
        {
            "reason": "FieldValueInvalid",
            "message": f'Invalid value: "{name}": {problem}',
            "field": "metadata.name",
        }
        for problem in problems
    ]
    details: dict[str, object] = {"name": name, "kind": rt.kind, "causes": causes}
    if rt.group:
        details["group"] = rt.group
    text = ", ".join(f"metadata.name: {cause['message']}" for cause in causes)
    qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    raise SandboxError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)
