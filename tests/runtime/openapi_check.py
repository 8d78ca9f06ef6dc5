"""Validate real HTTP answers against the backend's OpenAPI document (jsonschema, Draft 2020-12,
the dialect of OpenAPI 3.1 schemas). The document is fetched from the server under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:clustersync:openapi"
METHODS = ("get", "post", "put", "patch", "delete")


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class OpenApiChecker:
    doc: dict[str, Any]
    checked: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)

    def operations(self) -> set[tuple[str, str]]:
        return {
            (method, path)
            for path, item in self.doc["paths"].items()
            for method in item
            if method in METHODS
        }

    def check(self, method: str, template: str, status: int, media: str, body: bytes) -> None:
        """Fail unless ``template`` documents ``method``, that answer status and media type, and
        the body validates against the documented schema."""
        op = self.doc["paths"].get(template, {}).get(method)
        assert op is not None, f"{method.upper()} {template} is not in the document"
        responses = op["responses"]
        assert str(status) in responses, f"{method.upper()} {template}: {status} not documented"
        where = ["paths", template, method, "responses", str(status)]
        response = responses[str(status)]
        if "$ref" in response:
            where = response["$ref"].removeprefix("#/").split("/")
            response = self.doc
            for part in where:
                response = response[part]
        content = response.get("content", {})
        assert media in content, f"{method.upper()} {template} {status}: {media} not documented"
        schema = {"$ref": f"{BASE}#/{_pointer(*where, 'content', media, 'schema')}"}
        instance: Any = body.decode()
        if media.endswith("json"):
            instance = orjson.loads(body)
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{method.upper()} {template} {status}: {errors[0].message}"
        self.checked.add((method, template))
