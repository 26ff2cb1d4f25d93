"""Every policy document kind the loader accepts, and the JSON Schema over all of them."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from webhook.policy.common import API_VERSION
from webhook.policy.injection import InjectionPolicy

PolicyDocument = InjectionPolicy
DOCUMENT_KINDS: dict[str, type[PolicyDocument]] = {
    "InjectionPolicy": InjectionPolicy,
}

__all__ = ["API_VERSION", "DOCUMENT_KINDS", "InjectionPolicy", "PolicyDocument", "json_schema"]


def json_schema() -> dict[str, Any]:
    """One schema accepting any policy document, for editors (yaml-language-server)."""
    schema = TypeAdapter(PolicyDocument).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "runtime.platform.io/v1 policy document"
    return schema
