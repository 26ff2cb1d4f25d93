"""Every policy document kind the loader accepts, and the JSON Schema over all of them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from webhook.policy.common import API_VERSION
from webhook.policy.injection import InjectionPolicy
from webhook.policy.validation import ValidationPolicy

# A discriminated union on `kind`: the JSON Schema offers the right shape per kind,
# and a document is validated against its own kind only.
PolicyDocument = Annotated[InjectionPolicy | ValidationPolicy, Field(discriminator="kind")]
DOCUMENT_KINDS: dict[str, type[InjectionPolicy] | type[ValidationPolicy]] = {
    "InjectionPolicy": InjectionPolicy,
    "ValidationPolicy": ValidationPolicy,
}

__all__ = ["API_VERSION", "DOCUMENT_KINDS", "InjectionPolicy", "PolicyDocument", "ValidationPolicy",
           "json_schema"]


def json_schema() -> dict[str, Any]:
    """One schema accepting any policy document, for editors (yaml-language-server)."""
    schema = TypeAdapter(PolicyDocument).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "runtime.platform.io/v1 policy document"
    return schema
