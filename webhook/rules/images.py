"""Image rules: allowed registries, no moving `latest` tag, digests required."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from webhook.rules.containers import iter_containers
from webhook.core.finding import Finding
from webhook.rules.image_ref import parse_image, registry_matches

__all__ = ["check_images"]


def check_images(spec: Mapping[str, Any], *, allowed_registries: Sequence[str] = (),
                 forbid_latest: bool = False, require_digest: bool = False) -> list[Finding]:
    """One finding per offending container image, in container order.

    `forbid_latest` flags `:latest` and a reference with neither tag nor digest
    (which pulls latest). A digest-pinned reference passes whatever its tag says,
    because runtimes pull by digest and ignore the tag.
    """
    findings: list[Finding] = []
    for c in iter_containers(spec):
        path = f"{c.path}.image"
        image = c.raw.get("image")
        if not isinstance(image, str) or not image:
            findings.append(Finding("invalidImage", path, f"{c.label} has no image", c.name))
            continue
        try:
            ref = parse_image(image)
        except ValueError as exc:
            findings.append(Finding("invalidImage", path, f"{c.label}: {exc}", c.name))
            continue
        if allowed_registries and not any(registry_matches(ref, r) for r in allowed_registries):
            findings.append(Finding(
                "registry", path, f'{c.label} image "{image}" is not from an allowed registry '
                f"({', '.join(allowed_registries)})", c.name))
        if forbid_latest and ref.digest is None:
            if ref.tag is None:
                findings.append(Finding("latestTag", path, f'{c.label} image "{image}" has no tag '
                                        "(pulls latest); pin a version tag or a digest", c.name))
            elif ref.tag == "latest":
                findings.append(Finding("latestTag", path, f'{c.label} image "{image}" uses the '
                                        "latest tag; pin a version tag or a digest", c.name))
        if require_digest and ref.digest is None:
            findings.append(Finding("digest", path, f'{c.label} image "{image}" is not pinned '
                                    "by digest (@sha256:...)", c.name))
    return findings
