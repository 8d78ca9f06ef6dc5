"""Verified identities: who a credential belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    """An agent of one cluster, or an operator (admin) of the backend API."""

    account: str = ""
    cluster: str = ""
    admin: bool = False


@dataclass(frozen=True, slots=True)
class TokenTable:
    tokens: dict[str, Identity] = field(default_factory=dict)

    def identify(self, token: str | None) -> Identity | None:
        return self.tokens.get(token) if token else None
