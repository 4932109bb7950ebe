"""Generate the WhatsAppShard CustomResourceDefinition from the pydantic models.

The models in `wasp.shard` are the source of truth; this module turns their
JSON schema into the structural OpenAPI v3 schema Kubernetes wants (no `$ref`,
no `title`, nullable-free optionals, descriptions and CEL rules kept) and wraps
it in the CRD with printer columns, short name, category and status subresource.

    python -m wasp.crd            print the CRD
    python -m wasp.crd --write    write crds/ and the chart's crds/ copy
    python -m wasp.crd --check    exit 1 if either file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from wasp import shard
from wasp.contract import CRD, SHARD_NAME_MAX_LENGTH, SHARD_NAME_PATTERN

ROOT = Path(__file__).resolve().parent.parent
CRD_NAME = CRD.crd_name
CRD_FILES = (
    ROOT / "crds" / f"{CRD_NAME}.yaml",
    ROOT / "charts" / "wasp" / "crds" / f"{CRD_NAME}.yaml",
)
_DROPPED_KEYS = {"title", "$defs"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON schema node into Kubernetes' structural form."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    any_of = schema.get("anyOf")
    if any_of and not schema.get("x-kubernetes-int-or-string"):
        # `X | None` is how pydantic says optional; Kubernetes says it by leaving
        # the field out of `required`.
        options = [option for option in any_of if option.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema}")
        rest = {k: v for k, v in schema.items() if k not in {"anyOf", "default"}}
        merged = structural({**options[0], **rest}, defs)
        if schema.get("default") is not None:
            merged["default"] = schema["default"]
        return merged

    node: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields already
        if key == "properties":
            node[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in {"items", "additionalProperties"} and isinstance(value, dict):
            node[key] = structural(value, defs)
        elif key == "default":
            node[key] = _without_nulls(value)
        elif key == "const":
            node["enum"] = [value]
        else:
            node[key] = value
    if node.get("x-kubernetes-int-or-string"):
        node.pop("anyOf", None)
        node.pop("type", None)
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    return node


def _without_nulls(value: Any) -> Any:
    """Defaults of nested models list unset optionals as null; Kubernetes wants them absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    return structural(raw, raw.get("$defs", {}))


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec = _model_schema(shard.WhatsAppShardSpec)
    status = _model_schema(shard.WhatsAppShardStatus)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    top = shard.WhatsAppShard.model_json_schema()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {f"{CRD.group}/generated-by": "python -m wasp.crd --write"},
            "labels": {"app.kubernetes.io/part-of": "wasp"},
        },
        "spec": {
            "group": CRD.group,
            "scope": "Namespaced",
            "names": {
                "kind": CRD.kind,
                "listKind": f"{CRD.kind}List",
                "plural": CRD.plural,
                "singular": CRD.singular,
                "shortNames": list(CRD.short_names),
                "categories": list(CRD.categories),
            },
            "versions": [
                {
                    "name": CRD.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _column("From", ".spec.slotFrom", "First slot of the range"),
                        _column("To", ".spec.slotTo", "Last slot of the range"),
                        _column("Active", ".status.active", "Sessions held now", "integer"),
                        _column("Max", ".spec.capacity.maxActive", "Session limit", "integer"),
                        _column("Phase", ".status.phase", "Lifecycle phase"),
                        _column("Age", ".metadata.creationTimestamp", "", "date"),
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": top["description"],
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"self.metadata.name.size() <= {SHARD_NAME_MAX_LENGTH}"
                                    f" && self.metadata.name.matches('{SHARD_NAME_PATTERN}')",
                                    "message": "name must be a DNS label of at most "
                                    f"{SHARD_NAME_MAX_LENGTH} characters starting with a letter "
                                    "(it names the shard's StatefulSet and Service)",
                                    "reason": "FieldValueInvalid",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string", "description": _API_VERSION_DOC},
                                "kind": {"type": "string", "description": _KIND_DOC},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


_API_VERSION_DOC = f"Versioned schema of this object: {CRD.api_version}."
_KIND_DOC = f"Kind of this object: {CRD.kind}."


def _column(name: str, path: str, description: str, kind: str = "string") -> dict[str, str]:
    column = {"name": name, "type": kind, "jsonPath": path}
    if description:
        column["description"] = description
    return column


class _PlainDumper(yaml.SafeDumper):
    """Writes a node the schema uses twice (one model in two fields) twice, without YAML
    anchors and aliases: the file reads as the apiserver stores it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated from wasp/shard.py by `python -m wasp.crd --write`; do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_PlainDumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wasp.crd",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        for path in CRD_FILES:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    elif args.check:
        stale = [str(p) for p in CRD_FILES if not p.exists() or p.read_text() != text]
        if stale:
            print(f"out of date (run `python -m wasp.crd --write`): {', '.join(stale)}")
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
