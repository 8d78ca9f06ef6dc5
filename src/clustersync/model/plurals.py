"""Resource names from object kinds, for tools that are given objects but not their resource.

Kubernetes learns plurals from discovery; the backend API has no cluster to ask, so it applies the
apiserver's own default rule plus the irregular built-ins. Callers can always name the resource.
"""

from __future__ import annotations

_IRREGULAR = {
    "endpoints": "endpoints",
    "networkpolicy": "networkpolicies",
    "podsecuritypolicy": "podsecuritypolicies",
    "ingress": "ingresses",
    "ingressclass": "ingressclasses",
}


def guess_resource(kind_name: str) -> str:
    lower = kind_name.lower()
    if lower in _IRREGULAR:
        return _IRREGULAR[lower]
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"
