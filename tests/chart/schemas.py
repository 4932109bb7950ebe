"""kubeconform's JSON schemas, made offline from a real apiserver's OpenAPI v2 document.

kubeconform normally downloads its schemas; these machines have no internet.
The loopback control plane publishes the same API at /openapi/v2, CRDs
included (WhatsAppShard, once crds/ is applied). Each kind the chart renders
becomes one standalone schema file, its references inlined (recursive ones,
like JSONSchemaProps, are kept as local definitions), made strict like
kubeconform's `-strict` schemas: no property the API does not declare.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

# kubeconform fills this in for every resource it checks.
LOCATION = "{{ .ResourceKind }}_{{ .Group }}_{{ .ResourceAPIVersion }}.json"
REF = "#/definitions/"


def file_name(group: str, version: str, kind: str) -> str:
    # kubeconform's .Group is the apiVersion's first part: "v1" for the core group.
    return f"{kind.lower()}_{group or version}_{version}.json"


def _special(name: str) -> Schema | None:
    """Types the OpenAPI document spells as strings but YAML writes as numbers too."""
    if name.endswith("util.intstr.IntOrString"):
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    if name.endswith("api.resource.Quantity"):
        return {"oneOf": [{"type": "string"}, {"type": "number"}]}
    return None


def _strict(schema: Schema) -> Schema:
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


class Converter:
    def __init__(self, openapi: Schema) -> None:
        self.definitions: dict[str, Schema] = openapi["definitions"]

    def standalone(self, name: str) -> Schema:
        """One kind's schema with every reference resolved."""
        kept: dict[str, Schema] = {}
        root: Schema = self._resolve(copy.deepcopy(self.definitions[name]), (name,), kept)
        if kept:
            root["definitions"] = kept
        root["$schema"] = "http://json-schema.org/draft-07/schema#"
        return root

    def _resolve(self, node: Any, path: tuple[str, ...], kept: dict[str, Schema]) -> Any:
        if isinstance(node, list):
            return [self._resolve(item, path, kept) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF):
            target = ref[len(REF) :]
            special = _special(target)
            if special is not None:
                return special
            if target in path:
                # Recursive type: keep it once as a definition, refer to it.
                if target not in kept:
                    kept[target] = {}
                    kept[target] = self._resolve(
                        copy.deepcopy(self.definitions[target]), (target,), kept
                    )
                return {"$ref": ref}
            resolved = self._resolve(copy.deepcopy(self.definitions[target]), (*path, target), kept)
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**resolved, **extra} if extra else resolved
        out = {key: self._resolve(value, path, kept) for key, value in node.items()}
        if out.get("format") == "int-or-string":
            return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        return _strict(out)


def write_schemas(openapi: Schema, kinds: set[tuple[str, str, str]], out: Path) -> list[str]:
    """Write a schema per (group, version, kind) wanted; return the files written."""
    converter = Converter(openapi)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, definition in converter.definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            key = (gvk["group"], gvk["version"], gvk["kind"])
            if key in kinds:
                target = out / file_name(*key)
                target.write_text(json.dumps(converter.standalone(name)))
                written.append(target.name)
    return written
