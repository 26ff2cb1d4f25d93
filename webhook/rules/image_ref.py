"""Parse container image references the way the docker/distribution
``reference`` library does (``ParseNormalizedNamed``), and match them against
allowed registries.

Normalisation follows Docker's: a bare ``nginx`` is ``docker.io/library/nginx``,
``user/app`` is ``docker.io/user/app`` and ``index.docker.io`` is ``docker.io``,
so a policy sees the registry the runtime will actually pull from.

Grammar (from distribution/reference/regexp.go)::

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [domain "/"] path-component ["/" path-component]*   (<= 255 chars)
    domain         := host [":" port-number]
    host           := domain-name | "[" ipv6-hex-and-colons "]"
    domain-name    := domain-component ["." domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    path-component := /[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*/
    tag            := /[\\w][\\w.-]{0,127}/
    digest         := algorithm ":" hex   (sha256/sha384/sha512, lowercase hex of the right length)

Deliberate difference: newer distribution releases also treat a first
component containing an uppercase letter ("Registry/app") as a host. Here a
host must contain "." or ":" or be "localhost"; anything else is a Docker Hub
path, where uppercase is invalid, so such references are rejected (fail closed).

Note for policy authors: when both tag and digest are given, container
runtimes pull by digest and ignore the tag, so do not trust the tag of such a
reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["ImageRef", "parse_image", "registry_matches"]

DEFAULT_REGISTRY: Final = "docker.io"
_LEGACY_DEFAULT_REGISTRY: Final = "index.docker.io"
_OFFICIAL_REPO_PREFIX: Final = "library/"
_NAME_TOTAL_LENGTH_MAX: Final = 255

# Explicit ASCII classes: Python's \w would accept Unicode letters, Go's does not.
_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME: Final = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6: Final = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_RE: Final = re.compile(rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?")
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE: Final = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE: Final = re.compile(
    r"(?P<algorithm>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):(?P<hex>[0-9a-fA-F]{32,})"
)
# A bare 64-hex string is an image ID, which Docker refuses to read as a name.
_IDENTIFIER_RE: Final = re.compile(r"[a-f0-9]{64}")
# go-digest only accepts algorithms it can verify, with exact lowercase-hex lengths.
_DIGEST_HEX_LENGTHS: Final[dict[str, int]] = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully-qualified name without tag or digest, e.g. ``docker.io/library/nginx``."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        ref = self.name
        if self.tag is not None:
            ref += f":{self.tag}"
        if self.digest is not None:
            ref += f"@{self.digest}"
        return ref


def _validate_digest(digest: str, ref: str) -> None:
    m = _DIGEST_RE.fullmatch(digest)
    if m is None:
        raise ValueError(f"invalid image reference {ref!r}: digest {digest!r} is not <algorithm>:<hex>")
    algorithm, hex_part = m["algorithm"], m["hex"]
    expected_len = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected_len is None:
        raise ValueError(f"invalid image reference {ref!r}: unsupported digest algorithm {algorithm!r}")
    if len(hex_part) != expected_len or hex_part != hex_part.lower():
        raise ValueError(
            f"invalid image reference {ref!r}: {algorithm} digest must be {expected_len} lowercase hex characters"
        )


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: decide whether the first component is a registry host."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_REGISTRY, name
    if domain == _LEGACY_DEFAULT_REGISTRY:
        domain = DEFAULT_REGISTRY
    # Official images live under "library/" on Docker Hub.
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = _OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_image(ref: str) -> ImageRef:
    """Parse and normalise an image reference; raise ValueError if it is invalid.

    >>> parse_image("nginx:1.25")
    ImageRef(registry='docker.io', repository='library/nginx', tag='1.25', digest=None)
    """
    if not isinstance(ref, str):
        raise ValueError(f"invalid image reference {ref!r}: expected a string, got {type(ref).__name__}")
    if not ref:
        raise ValueError("invalid image reference '': must not be empty")
    if _IDENTIFIER_RE.fullmatch(ref):
        raise ValueError(f"invalid image reference {ref!r}: cannot be a 64-character hexadecimal image ID")

    # Neither name nor tag may contain "@", so the first one starts the digest.
    rest, at, digest = ref.partition("@")
    if at:
        _validate_digest(digest, ref)

    # A ":" after the last "/" introduces a tag; one before it is a registry port.
    tag: str | None = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise ValueError(
                f"invalid image reference {ref!r}: tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
            )

    registry, repository = _split_domain(rest)
    if registry != DEFAULT_REGISTRY and not _DOMAIN_RE.fullmatch(registry):
        raise ValueError(f"invalid image reference {ref!r}: bad registry host {registry!r}")
    if not _PATH_RE.fullmatch(repository):
        if repository != repository.lower():
            raise ValueError(f"invalid image reference {ref!r}: repository name {repository!r} must be lowercase")
        raise ValueError(
            f"invalid image reference {ref!r}: bad repository name {repository!r} "
            "(lowercase alphanumerics separated by '.', '_', '__', '-' or '/')"
        )
    if len(registry) + 1 + len(repository) > _NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"invalid image reference {ref!r}: name longer than {_NAME_TOTAL_LENGTH_MAX} characters")

    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest if at else None)


def _normalise_host(host: str) -> str:
    # Hostnames are case-insensitive in DNS; the legacy Hub alias is the same registry.
    host = host.lower()
    return DEFAULT_REGISTRY if host == _LEGACY_DEFAULT_REGISTRY else host


def registry_matches(image: ImageRef, allowed: str) -> bool:
    """True if ``image`` comes from ``allowed``: a registry host[:port], optionally
    followed by a repository path prefix.

    * ``"ghcr.io"`` matches every image on ghcr.io, but not ``ghcr.io.evil.com``;
    * ``"ghcr.io/myorg"`` matches ``ghcr.io/myorg/app`` and ``ghcr.io/myorg/team/app``,
      not ``ghcr.io/myorganisation/app`` (prefixes match whole path components);
    * ``"docker.io"`` matches bare names such as ``nginx``; official images are
      under ``"docker.io/library"``;
    * the port is part of the registry: ``"registry.local"`` does not match
      ``registry.local:5000/app``.

    The first component of ``allowed`` is always the host, so Docker Hub
    organisations must be written ``"docker.io/myorg"``. Raises ValueError for a
    malformed ``allowed`` (a configuration error, better loud than never matching).
    """
    if not isinstance(allowed, str) or not allowed:
        raise ValueError(f"invalid allowed registry {allowed!r}: expected a non-empty string")
    host, _, path = allowed.partition("/")
    path = path.rstrip("/")  # "ghcr.io/myorg/" means the same as "ghcr.io/myorg"
    if not _DOMAIN_RE.fullmatch(host) or (path and not _PATH_RE.fullmatch(path)):
        raise ValueError(
            f"invalid allowed registry {allowed!r}: expected host[:port][/path], e.g. 'ghcr.io/myorg'"
        )

    if _normalise_host(image.registry) != _normalise_host(host):
        return False
    if not path:
        return True
    return image.repository == path or image.repository.startswith(path + "/")
