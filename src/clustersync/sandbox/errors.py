"""Kubernetes-style errors, rendered as ``Status`` objects."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


class SandboxError(Exception):
    """An API error with the HTTP code and Kubernetes ``reason`` it maps to."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}

    def to_status(self) -> dict[str, Any]:
        return status_object(self.status, self.reason, self.message, self.details)


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": rt.resource}
    if rt.group:
        d["group"] = rt.group
    return d


def _qualified(rt: ResourceType) -> str:
    # Real messages say `deployments.apps "x"` for non-core groups.
    return f"{rt.resource}.{rt.group}" if rt.group else rt.resource


def not_found(rt: ResourceType, name: str) -> SandboxError:
    return SandboxError(404, "NotFound", f'{_qualified(rt)} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> SandboxError:
    return SandboxError(
        409, "AlreadyExists", f'{_qualified(rt)} "{name}" already exists', _details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> SandboxError:
    msg = (
        f'Operation cannot be fulfilled on {_qualified(rt)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    return SandboxError(409, "Conflict", msg, _details(rt, name))


def expired(message: str) -> SandboxError:
    return SandboxError(410, "Expired", message)


def bad_request(message: str) -> SandboxError:
    return SandboxError(400, "BadRequest", message)


def invalid(rt: ResourceType | None, name: str, message: str) -> SandboxError:
    kind = rt.kind if rt else "Object"
    details: dict[str, Any] = {"name": name, "kind": kind}
    if rt and rt.group:
        details["group"] = rt.group
    return SandboxError(422, "Invalid", f'{kind} "{name}" is invalid: {message}', details)
