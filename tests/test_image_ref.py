"""Tests for webhook.rules.image_ref (docker/distribution reference semantics)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.rules.image_ref import ImageRef, parse_image, registry_matches

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8
SHA384 = "sha384:" + "0123456789abcdef" * 6
HEX64 = "0123456789abcdef" * 4

# (reference, registry, repository, tag, digest)
VALID: list[tuple[str, str, str, str | None, str | None]] = [
    # Docker Hub normalisation
    ("nginx", "docker.io", "library/nginx", None, None),
    ("nginx:latest", "docker.io", "library/nginx", "latest", None),
    ("nginx:1.25.3-alpine", "docker.io", "library/nginx", "1.25.3-alpine", None),
    ("user/app", "docker.io", "user/app", None, None),
    ("user/app:v2", "docker.io", "user/app", "v2", None),
    ("library/nginx", "docker.io", "library/nginx", None, None),
    ("org/team/app", "docker.io", "org/team/app", None, None),
    ("docker.io/nginx", "docker.io", "library/nginx", None, None),
    ("docker.io/library/nginx", "docker.io", "library/nginx", None, None),
    ("docker.io/user/app:1", "docker.io", "user/app", "1", None),
    ("index.docker.io/nginx", "docker.io", "library/nginx", None, None),
    ("index.docker.io/user/app", "docker.io", "user/app", None, None),
    ("registry-1.docker.io/nginx", "registry-1.docker.io", "nginx", None, None),  # only the two Hub names normalise
    # first component is a host only with "." or ":" or "localhost"
    ("ghcr.io/myorg/app", "ghcr.io", "myorg/app", None, None),
    ("ghcr.io/app", "ghcr.io", "app", None, None),  # no "library/" outside Docker Hub
    ("quay.io/org/app:v1.2.3", "quay.io", "org/app", "v1.2.3", None),
    ("gcr.io/project/sub/dir/app:tag", "gcr.io", "project/sub/dir/app", "tag", None),
    ("registry.local:5000/app:1.0", "registry.local:5000", "app", "1.0", None),
    ("registry.local:5000/app", "registry.local:5000", "app", None, None),
    ("myregistry:5000/app", "myregistry:5000", "app", None, None),  # ":" alone makes a host
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/team/app:dev", "localhost:5000", "team/app", "dev", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
    ("Registry.Example.COM/app", "Registry.Example.COM", "app", None, None),  # hosts may be uppercase
    ("my-registry.example.com:443/team/app", "my-registry.example.com:443", "team/app", None, None),
    ("a.b/c", "a.b", "c", None, None),
    ("localhost", "docker.io", "library/localhost", None, None),  # no "/": a Hub name
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),  # ...with tag "5000", as Docker reads it
    ("myorg/app", "docker.io", "myorg/app", None, None),
    # IPv6 hosts in brackets
    ("[::1]/app", "[::1]", "app", None, None),
    ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
    ("[2001:db8::1]:5000/team/app", "[2001:db8::1]:5000", "team/app", None, None),
    ("[fe80::ABCD]/app", "[fe80::ABCD]", "app", None, None),
    # path component separators
    ("a_b/c", "docker.io", "a_b/c", None, None),
    ("a__b/c", "docker.io", "a__b/c", None, None),
    ("a-b/c", "docker.io", "a-b/c", None, None),
    ("a---b/c", "docker.io", "a---b/c", None, None),
    ("a.b-c_d__e", "docker.io", "library/a.b-c_d__e", None, None),
    ("0/1", "docker.io", "0/1", None, None),
    # tags
    ("app:V1", "docker.io", "library/app", "V1", None),  # tags may be uppercase
    ("app:_x", "docker.io", "library/app", "_x", None),
    ("app:1.0-rc.1_b", "docker.io", "library/app", "1.0-rc.1_b", None),
    ("app:" + "a" * 128, "docker.io", "library/app", "a" * 128, None),
    # digests
    (f"app@{SHA256}", "docker.io", "library/app", None, SHA256),
    (f"ghcr.io/org/app@{SHA256}", "ghcr.io", "org/app", None, SHA256),
    (f"app:1.0@{SHA256}", "docker.io", "library/app", "1.0", SHA256),
    (f"registry.local:5000/app:1.0@{SHA256}", "registry.local:5000", "app", "1.0", SHA256),
    (f"app@{SHA384}", "docker.io", "library/app", None, SHA384),
    (f"app@{SHA512}", "docker.io", "library/app", None, SHA512),
    (f"[::1]:5000/app@{SHA256}", "[::1]:5000", "app", None, SHA256),
    # a 64-hex string is fine as a tag or a path component, just not alone
    (f"app:{HEX64}", "docker.io", "library/app", HEX64, None),
    (f"user/{HEX64}", "docker.io", f"user/{HEX64}", None, None),
]


@pytest.mark.parametrize(("ref", "registry", "repository", "tag", "digest"), VALID)
def test_valid(ref: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    parsed = parse_image(ref)
    assert parsed == ImageRef(registry=registry, repository=repository, tag=tag, digest=digest)
    assert parsed.name == f"{registry}/{repository}"


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "app:",  # empty tag
        ":tag",
        "app@",
        "app:1.0@",
        "@" + SHA256,
        # uppercase repository
        "Nginx",
        "nginx:1@sha256:" + HEX64.upper(),
        "user/App",
        "Foo/bar",  # not a host (no ".", ":" or "localhost"), so an uppercase Hub path
        "LOCALHOST/app",
        "ghcr.io/MyOrg/app",
        # malformed paths
        "a/b//c",
        "/app",
        "app/",
        "-app",
        "app-",
        "_app",
        "a..b",
        "a___b",
        "a.-b",
        "a/-b",
        "ghcr.io/",
        "ghcr.io//app",
        # malformed hosts
        "ghcr.io:/app",
        "ghcr.io:abc/app",
        "-ghcr.io/app",
        "ghcr-.io/app",
        "ghcr..io/app",
        "gh_cr.io/app",
        "https://ghcr.io/app",
        "[::1]",  # no path: read as Hub name "[::1]"
        "[::1/app",
        "[zz::1]/app",
        "[]/app",
        "[::1]:/app",
        # bad tags
        "app:-x",
        "app:.x",
        "app:a/b",
        "app:" + "a" * 129,
        "a:b:c",
        "app:tag with space",
        "app:tág",  # tags are ASCII-only (\w in Go)
        # bad digests
        "app@sha256:abc",
        "app@sha256:" + HEX64[:-1],
        "app@sha256:" + HEX64 + "0",
        "app@sha256:" + HEX64.upper(),
        "app@sha256:" + "g" * 64,
        "app@md5:" + "a" * 32,
        "app@SHA256:" + HEX64,
        "app@sha512:" + HEX64,  # wrong length for the algorithm
        "app@" + HEX64,
        "app@sha256:" + HEX64 + "@" + SHA256,
        # a bare image ID
        HEX64,
        # whitespace and control characters
        " nginx",
        "nginx ",
        "nginx\n",
        "ng inx",
        "nginx\t:1",
        # non-ASCII
        "nginх",  # Cyrillic "х"
        "ghcr.іo/app",  # Cyrillic "і"
        # too long (255 max for registry/repository, counted after normalisation)
        "a" * 256,
        "ghcr.io/" + "a" * 248,
        "a" * 238,  # docker.io/library/ + 238 = 256
    ],
)
def test_invalid(ref: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        parse_image(ref)
    assert repr(ref) in str(exc_info.value)  # the message quotes the input


def test_length_limit_boundary() -> None:
    assert parse_image("a" * 237).name == "docker.io/library/" + "a" * 237  # exactly 255
    assert parse_image("ghcr.io/" + "a" * 247).repository == "a" * 247


@pytest.mark.parametrize("value", [None, 1, b"nginx", ["nginx"]])
def test_invalid_types(value: object) -> None:
    with pytest.raises(ValueError):
        parse_image(value)  # type: ignore[arg-type]


def test_frozen() -> None:
    ref = parse_image("nginx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("user/app:v1", "docker.io/user/app:v1"),
        (f"app:1@{SHA256}", f"docker.io/library/app:1@{SHA256}"),
        ("registry.local:5000/app@" + SHA256, "registry.local:5000/app@" + SHA256),
    ],
)
def test_str_is_normalised_reference(ref: str, text: str) -> None:
    assert str(parse_image(ref)) == text


# (allowed, image, expected)
MATCHES: list[tuple[str, str, bool]] = [
    # registry host only
    ("docker.io", "nginx", True),
    ("docker.io", "nginx:1.25", True),
    ("docker.io", "user/app", True),
    ("docker.io", "docker.io/library/nginx", True),
    ("docker.io", "index.docker.io/user/app", True),
    ("index.docker.io", "nginx", True),  # the legacy alias is the same registry
    ("docker.io", "ghcr.io/org/app", False),
    ("docker.io", "docker.io.evil.com/app", False),
    ("docker.io", "registry-1.docker.io/app", False),
    ("ghcr.io", "ghcr.io/myorg/app", True),
    ("ghcr.io", f"ghcr.io/myorg/app@{SHA256}", True),
    ("ghcr.io", "ghcr.io.evil.com/myorg/app", False),
    ("ghcr.io", "evilghcr.io/app", False),
    ("ghcr.io", "nginx", False),
    ("ghcr.io", "ghcr.io:443/app", False),  # the port is part of the registry
    ("GHCR.IO", "ghcr.io/app", True),  # hosts are case-insensitive
    ("ghcr.io", "GHCR.io/app", True),
    # ports
    ("registry.local:5000", "registry.local:5000/app:1.0", True),
    ("registry.local", "registry.local:5000/app", False),
    ("registry.local:5000", "registry.local/app", False),
    ("registry.local:5000", "registry.local:5001/app", False),
    ("localhost", "localhost/app", True),
    ("localhost", "localhost:5000/app", False),
    ("localhost", "localhost", False),  # a bare "localhost" is a Docker Hub name
    ("[::1]:5000", "[::1]:5000/app", True),
    ("[::1]", "[::1]:5000/app", False),
    # host/path prefixes match whole path components
    ("ghcr.io/myorg", "ghcr.io/myorg/app", True),
    ("ghcr.io/myorg", "ghcr.io/myorg/team/app:v1", True),
    ("ghcr.io/myorg", "ghcr.io/myorg", True),  # the prefix itself
    ("ghcr.io/myorg", "ghcr.io/myorganisation/app", False),
    ("ghcr.io/myorg", "ghcr.io/my/org", False),
    ("ghcr.io/myorg", "ghcr.io/other/myorg", False),
    ("ghcr.io/myorg", "quay.io/myorg/app", False),
    ("ghcr.io/myorg/", "ghcr.io/myorg/app", True),  # trailing "/" tolerated
    ("ghcr.io/myorg/team", "ghcr.io/myorg/team/app", True),
    ("ghcr.io/myorg/team", "ghcr.io/myorg/app", False),
    ("ghcr.io/myorg/app", "ghcr.io/myorg/app:1.0", True),
    ("ghcr.io/myorg/app", "ghcr.io/myorg/app-evil", False),
    ("ghcr.io/myorg/app", "ghcr.io/myorg/app.evil", False),
    # Docker Hub paths: official images live under library/
    ("docker.io/library", "nginx", True),
    ("docker.io/library", "user/app", False),
    ("docker.io/myorg", "myorg/app", True),
    ("docker.io/myorg", "docker.io/myorg/app", True),
    ("docker.io/myorg", "myorgx/app", False),
    ("docker.io/nginx", "nginx", False),  # "nginx" is docker.io/library/nginx
    ("docker.io/library/nginx", "nginx:1.25", True),
    ("index.docker.io/library", "docker.io/library/nginx", True),
    ("registry.local:5000/team", "registry.local:5000/team/app", True),
    ("registry.local/team", "registry.local:5000/team/app", False),
]


@pytest.mark.parametrize(("allowed", "image", "expected"), MATCHES)
def test_registry_matches(allowed: str, image: str, expected: bool) -> None:
    assert registry_matches(parse_image(image), allowed) is expected


@pytest.mark.parametrize(
    "allowed",
    [
        "",
        " ghcr.io",
        "ghcr.io ",
        "https://ghcr.io",
        "ghcr.io/MyOrg",  # repository paths are lowercase; this could never match
        "ghcr.io//org",
        "ghcr.io/org//app",
        "ghcr.io/org:tag",
        f"ghcr.io/org@{SHA256}",
        "*.ghcr.io",
        "ghcr.io:port",
        "/org",
    ],
)
def test_registry_matches_rejects_malformed_allowed(allowed: str) -> None:
    with pytest.raises(ValueError):
        registry_matches(parse_image("ghcr.io/org/app"), allowed)


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
_path_component = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_path = st.lists(_path_component, min_size=1, max_size=4).map("/".join)
_host = st.one_of(
    st.sampled_from(["ghcr.io", "quay.io", "localhost", "registry.local", "127.0.0.1", "[::1]", "a-b.example.com"]),
    st.builds(lambda a, b: f"{a}.{b}", _alnum, _alnum),
)
_port = st.one_of(st.just(""), st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}"))
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)


@given(
    host=st.one_of(st.none(), st.builds(lambda h, p: h + p, _host, _port)),
    path=_path,
    tag=st.one_of(st.none(), _tag),
    digest=st.one_of(st.none(), _digest),
)
def test_generated_references_parse(host: str | None, path: str, tag: str | None, digest: str | None) -> None:
    ref = (f"{host}/" if host else "") + path + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    first, _, rest = path.partition("/")
    if host is None and rest and "." in first:
        # Without an explicit host, a first component holding "." is read as one,
        # which is only valid if it is also a hostname ("_" is not allowed there).
        if "_" in first:
            with pytest.raises(ValueError):
                parse_image(ref)
            return
        host, path = first, rest
    parsed = parse_image(ref)
    assert parsed.tag == tag
    assert parsed.digest == digest
    if host is not None:
        assert parsed.registry == host
        assert parsed.repository == path
    else:
        assert parsed.registry == "docker.io"
        assert parsed.repository == (path if "/" in path else "library/" + path)
    # the normalised form is stable
    assert parse_image(str(parsed)) == parsed
    assert registry_matches(parsed, parsed.registry)
    assert registry_matches(parsed, parsed.name)


@given(st.text(alphabet="abcAB01:/.@-_[]", max_size=30))
def test_arbitrary_text_only_value_error(text: str) -> None:
    try:
        parsed = parse_image(text)
    except ValueError:
        return
    assert parse_image(str(parsed)) == parsed


@given(st.text(max_size=40))
def test_unicode_text_only_value_error(text: str) -> None:
    try:
        parse_image(text)
    except ValueError:
        pass
