"""Verified identities: who a credential belongs to.

Agent keys come in two scopes. A cluster key names one (account, cluster). An account key, as
kubescape issues them, names only the account: the agent says which cluster it is with its
``X-API-CLUSTER`` header, and can act for any cluster of that account but never outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_CLUSTER_NAME = 256


@dataclass(frozen=True, slots=True)
class Identity:
    """An agent of one cluster, an account key (``cluster`` empty), or an operator (admin)."""

    account: str = ""
    cluster: str = ""
    admin: bool = False

    @property
    def account_wide(self) -> bool:
        """An account key: its cluster comes from the agent's connect headers."""
        return not self.admin and bool(self.account) and not self.cluster

    def for_cluster(self, cluster: str) -> Identity:
        """The identity of ``cluster`` under this account key."""
        if not self.account_wide:
            raise ValueError("only an account key takes its cluster from the agent")
        problem = cluster_name_problem(cluster)
        if problem:
            raise ValueError(problem)
        return Identity(self.account, cluster)


def cluster_name_problem(name: str) -> str:
    """Why ``name`` cannot be a cluster name, or "" when it can."""
    if not name:
        return "the cluster name is empty"
    if len(name) > MAX_CLUSTER_NAME:
        return f"the cluster name is longer than {MAX_CLUSTER_NAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "the cluster name contains control characters"
    return ""


@dataclass(frozen=True, slots=True)
class TokenTable:
    tokens: dict[str, Identity] = field(default_factory=dict)

    def identify(self, token: str | None) -> Identity | None:
        return self.tokens.get(token) if token else None

    def may_connect(self, account: str, cluster: str) -> bool:
        """Whether some agent key could connect as ``cluster`` of ``account``: a key naming that
        cluster, or an account key of that account (which may name any of its clusters)."""
        return any(
            not i.admin and i.account == account and i.cluster in ("", cluster)
            for i in self.tokens.values()
        )
