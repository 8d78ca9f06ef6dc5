"""Plain values shared by every layer: kinds, object references, identities."""

from clustersync.model.kinds import Kind, KindError, ObjectRef

__all__ = ["Kind", "KindError", "ObjectRef"]
