"""Schema algebra for the converter: ``$ref`` lookup, ``allOf`` merging, type
inference and the check that ``oneOf`` branches cannot both match.

A grammar can express "any of" but not "exactly one of" nor "all of", so
``allOf`` is merged into one schema and ``oneOf`` is accepted only when its
branches provably never overlap (then it means the same as ``anyOf``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

from ..errors import GrammarError

__all__ = [
    "ANNOTATIONS",
    "JSON_KINDS",
    "Unsatisfiable",
    "check_keyword_types",
    "check_one_of_disjoint",
    "count_keyword",
    "infer_types",
    "json_kinds",
    "merge_all_of",
    "normalize_bounds",
    "path_hint",
    "resolve_pointer",
]

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "$schema", "$id", "$anchor",
    "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding", "discriminator",
    "$defs", "definitions",
})
JSON_KINDS = ("object", "array", "string", "number", "boolean", "null")
_TYPE_HINTS = {
    "object": ("properties", "required", "additionalProperties", "minProperties", "maxProperties",
               "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
              "contains", "minContains", "maxContains"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
_CONDITIONAL = ("if", "then", "else")
_MAX_REF_HOPS = 64
_STRUCTURAL = {"properties", "items", "prefixItems", "$defs", "definitions", "anyOf", "oneOf", "allOf",
               "additionalProperties", "additionalItems", "patternProperties", "propertyNames", "contains",
               "dependentSchemas", "dependencies", "not", "if", "then", "else"}


class Unsatisfiable(GrammarError):
    """No instance satisfies the schema: a union may drop such a branch and carry on."""

Resolver = Callable[[str], Any]


_NUMBER = (int, float)
_KEYWORD_TYPES: dict[str, tuple] = {
    "type": (str, list), "enum": (list,), "required": (list,), "properties": (dict,), "$defs": (dict,),
    "definitions": (dict,), "items": (dict, bool, list), "prefixItems": (list,), "anyOf": (list,),
    "oneOf": (list,), "allOf": (list,), "additionalProperties": (dict, bool), "additionalItems": (dict, bool),
    "minimum": _NUMBER, "maximum": _NUMBER, "exclusiveMinimum": (*_NUMBER, bool),
    "exclusiveMaximum": (*_NUMBER, bool), "minLength": _NUMBER, "maxLength": _NUMBER, "minItems": _NUMBER,
    "maxItems": _NUMBER, "pattern": (str,), "format": (str,), "$ref": (str,), "uniqueItems": (bool,),
    "multipleOf": _NUMBER, "minProperties": _NUMBER, "maxProperties": _NUMBER, "minContains": _NUMBER,
    "maxContains": _NUMBER, "contains": (dict, bool), "patternProperties": (dict,), "propertyNames": (dict, bool),
    "dependentRequired": (dict,), "dependentSchemas": (dict,), "dependencies": (dict,), "not": (dict, bool),
    "if": (dict, bool), "then": (dict, bool), "else": (dict, bool),
}


def check_keyword_types(schema: dict) -> None:
    """Refuse malformed keyword values before any code relies on their shape."""
    for key, allowed in _KEYWORD_TYPES.items():
        if key not in schema:
            continue
        value = schema[key]
        bad_bool = isinstance(value, bool) and bool not in allowed
        if bad_bool or not isinstance(value, allowed):
            raise GrammarError(f"'{key}' has the wrong kind of value: {value!r}")
    for key in ("required", "type"):
        if isinstance(schema.get(key), list) and not all(isinstance(v, str) for v in schema[key]):
            raise GrammarError(f"'{key}' must list strings")
    for key in ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas"):
        if not all(isinstance(sub, (dict, bool)) for sub in schema.get(key, {}).values()):
            raise GrammarError(f"every member of '{key}' must be a schema")
    for key in ("dependentRequired", "dependencies"):
        for names in schema.get(key, {}).values():
            if key == "dependentRequired" and not isinstance(names, list) or not isinstance(names, (list, dict, bool)):
                raise GrammarError(f"every member of '{key}' must be a list of names" +
                                   (" or a schema" if key == "dependencies" else ""))
            if isinstance(names, list) and not all(isinstance(name, str) for name in names):
                raise GrammarError(f"'{key}' must list property names (strings)")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if not all(isinstance(sub, (dict, bool)) for sub in schema.get(key, [])):
            raise GrammarError(f"every member of '{key}' must be a schema")


def path_hint(path: str) -> str:
    """A readable rule name from a JSON pointer ("#/properties/user/properties/name" -> "user-name")."""
    parts = [p for p in path.split("/")[1:] if p not in _STRUCTURAL and not p.isdigit()]
    name = "-".join(parts[-2:]) if parts else "document"
    return re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-")[:40] or "item"


def count_keyword(schema: dict, keyword: str) -> int | None:
    """A non-negative integer keyword (minItems, maxLength, ...), or None when absent."""
    value = schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise GrammarError(f"'{keyword}' must be a non-negative integer, not {value!r}")
    return value


def resolve_pointer(root: Any, ref: str) -> Any:
    """The subschema at local reference ``ref`` ("#", "#/$defs/x", ...)."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise GrammarError(f"$ref {ref!r}: only local references ('#/...') are supported")
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise GrammarError(f"$ref {ref!r}: anchors are not supported, use a JSON pointer")
    node = root
    for raw in ref[2:].split("/"):
        key = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise GrammarError(f"$ref {ref!r} points at nothing")
    return node


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _type_set(schema: dict) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    return {declared} if isinstance(declared, str) else set(declared)


def infer_types(schema: dict) -> list[str] | None:
    """Types the schema allows, from ``type`` or else from its keywords; None = any."""
    declared = schema.get("type")
    if declared is not None:
        types = [declared] if isinstance(declared, str) else list(declared)
        if not types or not all(isinstance(t, str) and t in (*JSON_KINDS, "integer") for t in types):
            raise GrammarError(f"bad 'type' {declared!r}")
        return types
    hinted = [kind for kind, keys in _TYPE_HINTS.items() if any(key in schema for key in keys)]
    if len(hinted) > 1:
        raise GrammarError(f"schema mixes keywords of types {hinted} without a 'type'; add one")
    return hinted or None


def normalize_bounds(schema: dict) -> dict:
    """Draft 4's boolean exclusiveMinimum/Maximum into the numeric form of later drafts."""
    out = dict(schema)
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(exclusive), bool):
            flag = out.pop(exclusive)
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    return out


def _deref(schema: Any, resolve: Resolver) -> Any:
    for _ in range(_MAX_REF_HOPS):
        if not (isinstance(schema, dict) and "$ref" in schema):
            return schema
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
        target = resolve(schema["$ref"])
        if rest:
            return {"allOf": [target, rest]}
        schema = target
    raise GrammarError("$ref chain too long or cyclic")


def _flatten(schemas: list, resolve: Resolver, depth: int = 0) -> list[dict]:
    out = []
    for schema in schemas:
        schema = _deref(schema, resolve)
        if schema is True:
            continue
        if schema is False:
            raise Unsatisfiable("allOf contains false: nothing can match")
        if not isinstance(schema, dict):
            raise GrammarError(f"allOf member must be a schema, not {schema!r}")
        if "allOf" in schema:
            if depth > _MAX_REF_HOPS:
                raise GrammarError("allOf nested too deeply")
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            check_keyword_types(schema)
            out.extend(_flatten([rest, *schema["allOf"]], resolve, depth + 1))
        else:
            check_keyword_types(schema)
            if any(isinstance(schema.get(k), bool) for k in ("exclusiveMinimum", "exclusiveMaximum")):
                raise GrammarError("draft-4 boolean exclusiveMinimum/exclusiveMaximum inside allOf is not supported")
            out.append(schema)
    return out


def merge_all_of(schemas: list, resolve: Resolver) -> dict:
    """One schema allowing exactly what every member of ``schemas`` allows (or, for
    ``patternProperties`` across members, a little less)."""
    parts = _flatten(schemas, resolve)
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in ANNOTATIONS or key in _OBJECT_KEYS or key in _ARRAY_KEYS or key in _CONDITIONAL:
                continue
            merged[key] = value if key not in merged else _merge_value(key, merged[key], value)
    if any(key in part for part in parts for key in _OBJECT_KEYS):
        _merge_objects(parts, merged)
    if any(key in part for part in parts for key in _ARRAY_KEYS):
        _merge_arrays(parts, merged)
    conditionals = {_canonical({k: part[k] for k in _CONDITIONAL if k in part}) for part in parts if "if" in part}
    if len(conditionals) > 1:
        raise GrammarError("allOf members with several if/then/else are not supported")
    for part in parts:
        if "if" in part:
            merged.update({k: part[k] for k in _CONDITIONAL if k in part})
    if sum(1 for part in parts if "anyOf" in part or "oneOf" in part) > 1:
        raise GrammarError("allOf members with several anyOf/oneOf are not supported")
    return merged


_OBJECT_KEYS = ("properties", "additionalProperties", "patternProperties")
_ARRAY_KEYS = ("items", "prefixItems", "additionalItems")


def _merge_arrays(parts: list[dict], merged: dict) -> None:
    """Position by position: a member's schema for item i is its prefixItems[i] (or tuple
    items[i]) if it has one, else its schema for further items."""
    shapes = []
    for part in parts:
        items = part.get("items")
        if isinstance(items, list):  # draft 4-7 tuple form
            shapes.append((items, part.get("additionalItems")))
        else:
            shapes.append((part.get("prefixItems", []), items))
    prefix = []
    for index in range(max(len(p) for p, _ in shapes)):
        at = [p[index] if index < len(p) else rest for p, rest in shapes]
        prefix.append(_all_of([s for s in at if s is not None and s is not True] or [True]))
    rests = [rest for _, rest in shapes if rest is not None and rest is not True]
    declared = any(rest is not None for _, rest in shapes)
    for key in _ARRAY_KEYS:
        merged.pop(key, None)
    if prefix:
        merged["prefixItems"] = prefix
    if declared:  # (none declared: the converter's choice for prefixItems alone stands)
        merged["items"] = _all_of(rests or [True])


def _merge_value(key: str, old: Any, new: Any) -> Any:
    if _canonical(old) == _canonical(new):
        return old
    if key in _LOWER_BOUNDS:
        return max(old, new)
    if key in _UPPER_BOUNDS:
        return min(old, new)
    if key == "type":
        return _merge_types(old, new)
    if key == "required":
        return list(dict.fromkeys([*old, *new]))
    if key in ("enum", "const"):
        new_values = {_canonical(v) for v in (new if key == "enum" else [new])}
        kept = [v for v in (old if key == "enum" else [old]) if _canonical(v) in new_values]
        if not kept:
            raise Unsatisfiable(f"allOf: no value satisfies every '{key}'")
        return kept if key == "enum" else kept[0]
    if key == "propertyNames":
        return {"allOf": [old, new]}
    if key == "uniqueItems":
        return old or new
    if key == "multipleOf":
        return _common_multiple(old, new)
    if key == "not":  # not A and not B: kept as a list, "not" of their anyOf
        listed = [*_negations(old), *_negations(new)]
        return {"anyOf": listed}
    if key in ("dependentRequired", "dependentSchemas", "dependencies"):
        return _merge_maps(key, old, new)
    raise GrammarError(f"allOf: conflicting values for '{key}' cannot be merged")


def _negations(value: Any) -> list:
    if isinstance(value, dict) and set(value) == {"anyOf"} and isinstance(value["anyOf"], list):
        return list(value["anyOf"])
    return [value]


def _common_multiple(old: Any, new: Any) -> Any:
    for value in (old, new):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
            raise GrammarError(f"'multipleOf' must be a number above 0, not {value!r}")
    a, b = Fraction(old), Fraction(new)
    lcm = Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))
    return int(lcm) if lcm.denominator == 1 else float(lcm)


def _merge_maps(key: str, old: dict, new: dict) -> dict:
    out = dict(old)
    for name, value in new.items():
        if name not in out or _canonical(out[name]) == _canonical(value):
            out[name] = value
        elif isinstance(value, list) and isinstance(out[name], list):
            out[name] = list(dict.fromkeys([*out[name], *value]))
        elif isinstance(value, (dict, bool)) and isinstance(out[name], (dict, bool)):
            out[name] = {"allOf": [out[name], value]}
        else:
            raise GrammarError(f"allOf: '{key}' of {name!r} mixes a list of names and a schema")
    return out


def _merge_types(old: Any, new: Any) -> list[str]:
    def widen(value: Any) -> set[str]:
        kinds = {value} if isinstance(value, str) else set(value)
        return kinds | ({"integer"} if "number" in kinds else set())

    both = widen(old) & widen(new)
    if "number" in both:
        both.discard("integer")  # number already holds every integer
    if not both:
        raise Unsatisfiable(f"allOf: types {old!r} and {new!r} have nothing in common")
    return sorted(both)


def _merge_objects(parts: list[dict], merged: dict) -> None:
    properties: dict[str, list] = {}
    for part in parts:
        for name, schema in part.get("properties", {}).items():
            properties.setdefault(name, []).append(schema)
    for part in parts:
        extra = part.get("additionalProperties", True)
        own = part.get("properties", {})
        for name in list(properties):
            if name in own or extra is True:
                continue
            if extra is False:  # (a name matching the part's patternProperties is dropped too: less, not more)
                if name in merged.get("required", []):
                    raise Unsatisfiable(f"allOf: required property '{name}' is forbidden by another member")
                del properties[name]
            else:
                properties[name].append(extra)
    merged["properties"] = {n: _all_of(s) for n, s in properties.items()}
    patterns = _merge_patterns(parts)
    if patterns:
        merged["patternProperties"] = patterns
    extras = [part["additionalProperties"] for part in parts if "additionalProperties" in part]
    if any(extra is False for extra in extras):
        merged["additionalProperties"] = False
    elif any(extra is not True for extra in extras):
        schemas = [extra for extra in extras if extra is not True]
        merged["additionalProperties"] = schemas[0] if len(schemas) == 1 else {"allOf": schemas}


def _all_of(schemas: list) -> Any:
    if any(schema is False for schema in schemas):
        return False  # a forbidden property stays forbidden
    return schemas[0] if len(schemas) == 1 else {"allOf": schemas}


def _merge_patterns(parts: list[dict]) -> dict[str, Any]:
    """Patterns of every member; a key one member matches by pattern is, to another member,
    a declared name (left to the converter), an additional property (its schema is added)
    or one of that member's own patterns (all pattern schemas are applied to every
    pattern key by the converter anyway). A pattern a closed member lacks is dropped."""
    patterns: dict[str, list] = {}
    for part in parts:
        for pattern, schema in part.get("patternProperties", {}).items():
            patterns.setdefault(pattern, []).append(schema)
    for part in parts:
        extra, own = part.get("additionalProperties", True), part.get("patternProperties", {})
        for pattern in list(patterns):
            if pattern in own or extra is True:
                continue
            if extra is False:
                del patterns[pattern]
            else:
                patterns[pattern].append(extra)
    return {pattern: _all_of(schemas) for pattern, schemas in patterns.items()}


# -- oneOf -------------------------------------------------------------------------


def json_kinds(schema: Any, resolve: Resolver, depth: int = 0) -> set[str]:
    """JSON kinds of the values a schema accepts (integer counts as number)."""
    schema = _deref(schema, resolve)
    if schema is True or not isinstance(schema, dict) or depth > _MAX_REF_HOPS:
        return set(JSON_KINDS)
    check_keyword_types(schema)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema.get("enum", []))
        return {_kind_of(value) for value in values}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return set().union(*(json_kinds(branch, resolve, depth + 1) for branch in branches))
    if "allOf" in schema:
        return set.intersection(*(json_kinds(branch, resolve, depth + 1) for branch in schema["allOf"]))
    # Only "type" narrows what a schema accepts: {"minimum": 0} accepts every string too.
    types = _type_set(schema)
    if types is None:
        return set(JSON_KINDS)
    return {"number" if t == "integer" else t for t in types}


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _values(schema: Any) -> set[str] | None:
    if isinstance(schema, dict) and "const" in schema:
        return {_canonical(schema["const"])}
    if isinstance(schema, dict) and "enum" in schema:
        return {_canonical(v) for v in schema["enum"]}
    return None


def _objects_disjoint(a: dict, b: dict, resolve: Resolver) -> bool:
    for name in set(a.get("required", [])) & set(b.get("required", [])):
        values_a = _values(_deref(a.get("properties", {}).get(name), resolve))
        values_b = _values(_deref(b.get("properties", {}).get(name), resolve))
        if values_a is not None and values_b is not None and not values_a & values_b:
            return True
    for closed, other in ((a, b), (b, a)):
        if closed.get("additionalProperties") is False:
            allowed = set(closed.get("properties", {}))
            if any(name not in allowed for name in other.get("required", [])):
                return True
    return False


def _disjoint(a: Any, b: Any, resolve: Resolver) -> bool:
    a, b = _deref(a, resolve), _deref(b, resolve)
    kinds = json_kinds(a, resolve) & json_kinds(b, resolve)
    if not kinds:
        return True
    values_a, values_b = _values(a), _values(b)
    if values_a is not None and values_b is not None:
        return not values_a & values_b
    if kinds == {"object"} and isinstance(a, dict) and isinstance(b, dict):
        return _objects_disjoint(a, b, resolve)
    return False


def check_one_of_disjoint(branches: list, resolve: Resolver, path: str) -> None:
    for i, first in enumerate(branches):
        for j in range(i + 1, len(branches)):
            if not _disjoint(first, branches[j], resolve):
                raise GrammarError(
                    f"{path}: oneOf branches {i} and {j} may match the same value, and a grammar "
                    "cannot enforce 'exactly one'; use anyOf if overlap is acceptable, or make the "
                    "branches disjoint (different types, or a required property with distinct const values)"
                )
