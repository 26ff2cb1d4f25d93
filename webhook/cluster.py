"""Cluster-side commands on the `kubernetes` client: `install-ca` and `report`.

Both talk to the API server with raw JSON: responses are read with
`_preload_content=False` and parsed here, and writes are JSON patches (plain lists,
which the client passes through untouched), so no object makes a round trip
through the client's generated models and fields they do not know survive.

`install_ca` needs only: Secret get/create/patch (the two Secrets it names) and
get/patch on the two webhook configurations, the verbs the self-managed overlay's
RBAC grants. `report` needs pod list. Printing is the command line's business;
these functions return results.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from webhook.certs import (BACKDATE, CA_CERT, CA_DAYS, CA_KEY, TLS_CERT, TLS_KEY, check_days, generate,
                           issued_by, service_dns_names, uncovered_names)
from webhook.policy.loader import PolicySet

TLS_SECRET_TYPE = "kubernetes.io/tls"
REQUEST_TIMEOUT = 30.0
_PAGE = 500
MUTATING, VALIDATING = "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"
# After a CA change the previous CA stays in the caBundle until the serving certificate
# from the new one has been in the Secret this long: replicas serve the old pair until
# the kubelet syncs the Secret volume (about a minute) and they reload it (two seconds).
CA_OVERLAP = timedelta(minutes=10)
# Seconds to wait, after adding a CA to the caBundle, before storing a pair it issued:
# every API server picks the configuration change up from its own watch, and a
# replica could load the new pair soon after the Secret changes.
BUNDLE_PROPAGATION = 10.0
_sleep = time.sleep
# install-ca runs again from its reads when a write meets a concurrent change (409, or
# 422 from a failed JSON patch `test`): a concurrent run, an edit of a configuration.
_ATTEMPTS = 3
# A difference between this machine's clock and the API server's worth a warning.
_SKEW_WARNING = timedelta(minutes=1)


class ClusterError(RuntimeError):
    """A failure to report as one line: no configuration, an API error, an unusable object."""


class ApiCallError(ClusterError):
    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


# -- connecting ---------------------------------------------------------------------------

def load_api_client(kubeconfig: Path | None = None) -> Any:
    """An ApiClient for `kubeconfig` if given; else in-cluster when KUBERNETES_SERVICE_HOST is
    set (a pod's service account), else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                    client_configuration=configuration, persist_config=False)
    except yaml.YAMLError as exc:
        # The kubernetes client lets a YAML error in a kubeconfig through as it is.
        # Its mark names the file read, also when it came from $KUBECONFIG.
        mark = getattr(exc, "problem_mark", None)
        where = f"kubeconfig {mark.name}:{mark.line + 1}" if mark \
            else f"kubeconfig {kubeconfig}" if kubeconfig else "kubeconfig"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ClusterError(f"no usable cluster configuration ({where}): invalid YAML: {_one_line(reason)}") \
            from None
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        where = "in-cluster" if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") \
            else f"kubeconfig {kubeconfig}" if kubeconfig else "kubeconfig"
        raise ClusterError(f"no usable cluster configuration ({where}): {_one_line(str(exc))}") from None
    return client.ApiClient(configuration)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Kube:
    """The few calls used, as raw JSON in and out, with errors turned into ApiCallError."""

    def __init__(self, api_client: Any, *, timeout: float = REQUEST_TIMEOUT) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.host = api_client.configuration.host
        self.timeout = timeout
        self._server_date: tuple[datetime, float] | None = None   # (Date header, monotonic clock then)

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError, MaxRetryError

        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            body = response.data
            self._note_date(response.headers)
        except ApiException as exc:
            self._note_date(exc.headers)
            raise ApiCallError(f"{what}: {_api_error_text(exc)}", exc.status) from None
        except MaxRetryError as exc:
            raise ApiCallError(f"{what}: cannot reach the API server at {self.host}: "
                               f"{_connection_reason(exc.reason)}", None) from None
        except (HTTPError, OSError) as exc:
            raise ApiCallError(f"{what}: cannot reach the API server at {self.host}: "
                               f"{_connection_reason(exc)}", None) from None
        try:
            obj = json.loads(body)
        except ValueError:
            raise ApiCallError(f"{what}: the API server answered with something other than JSON", None) from None
        if not isinstance(obj, dict):
            raise ApiCallError(f"{what}: unexpected answer from the API server", None)
        return obj

    def _note_date(self, headers: Any) -> None:
        try:
            value = headers.get("Date") if headers is not None else None
            date = parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError, AttributeError):
            return
        if date is not None and date.tzinfo is not None:
            self._server_date = (date.astimezone(timezone.utc), time.monotonic())

    def server_now(self) -> datetime | None:
        """The API server's time, from the Date header of its last answer; None without one."""
        if self._server_date is None:
            return None
        date, seen = self._server_date
        return date + timedelta(seconds=time.monotonic() - seen)

    # Secrets
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(f"get Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)
        except ApiCallError as exc:
            if exc.status == 404:
                return None
            raise

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(f"create Secret {namespace}/{name}", self.core.create_namespaced_secret,
                          namespace, body)

    def patch_secret(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call(f"patch Secret {namespace}/{name}", self.core.patch_namespaced_secret,
                          name, namespace, ops)

    # Webhook configurations (JSON patch: a list body is sent as application/json-patch+json)
    def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any]:
        read = (self.admission.read_mutating_webhook_configuration if kind == MUTATING
                else self.admission.read_validating_webhook_configuration)
        return self._call(f"get {kind} {name}", read, name)

    def patch_webhook_configuration(self, kind: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        patch = (self.admission.patch_mutating_webhook_configuration if kind == MUTATING
                 else self.admission.patch_validating_webhook_configuration)
        return self._call(f"patch {kind} {name}", patch, name, ops)

    # Pods
    def list_pods(self, namespace: str | None) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": _PAGE}
            if token:
                paging["_continue"] = token
            if namespace:
                page = self._call(f"list pods in namespace {namespace}", self.core.list_namespaced_pod,
                                  namespace, **paging)
            else:
                page = self._call("list pods in all namespaces", self.core.list_pod_for_all_namespaces, **paging)
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    # Namespaces
    def namespace_labels(self, namespace: str | None) -> dict[str, dict[str, str]]:
        """Name -> labels of one namespace (get) or of all (list)."""
        if namespace:
            items = [self._call(f"get namespace {namespace}", self.core.read_namespace, namespace)]
        else:
            items, token = [], None
            while True:
                paging: dict[str, Any] = {"limit": _PAGE, **({"_continue": token} if token else {})}
                page = self._call("list namespaces", self.core.list_namespace, **paging)
                items += [i for i in page.get("items") or [] if isinstance(i, dict)]
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        out: dict[str, dict[str, str]] = {}
        for item in items:
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            labels = metadata.get("labels") if isinstance(metadata.get("labels"), dict) else {}
            out[str(metadata.get("name") or "")] = {str(k): str(v) for k, v in labels.items()}
        return out


def _api_error_text(exc: Any) -> str:
    """`403 Forbidden: <the Status message>` from an ApiException."""
    message = ""
    try:
        status = json.loads(exc.body) if exc.body else {}
        if isinstance(status, dict):
            message = str(status.get("message") or "")
    except (ValueError, TypeError):
        message = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    text = f"{exc.status} {exc.reason}" if exc.status else str(exc.reason or "request failed")
    return _one_line(f"{text}: {message}" if message else text)


def _connection_reason(reason: Any) -> str:
    text = _one_line(str(reason))
    # urllib3 prefixes the connection: "HTTPConnection(host=..., port=...): Failed to ..." (or its repr)
    return re.sub(r"^(<[^>]*>|\w+\([^)]*\)):\s*", "", text) or type(reason).__name__


# -- install-ca ---------------------------------------------------------------------------

@dataclass
class ConfigurationPatch:
    kind: str
    name: str
    patched: int        # webhooks whose caBundle was set
    total: int

    @property
    def action(self) -> str:
        return "patched" if self.patched else "unchanged"


@dataclass
class InstallResult:
    namespace: str
    ca_secret: str
    secret: str
    ca: str                 # created | reused | renewed
    certificate: str        # created | reused | renewed
    secret_action: str      # created | updated | unchanged
    reason: str             # why a certificate was issued ("" when reused)
    not_after: datetime
    dns_names: tuple[str, ...]
    ca_bundle: str
    configurations: list[ConfigurationPatch] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (self.ca != "reused" or self.certificate != "reused" or self.secret_action != "unchanged"
                or any(c.patched for c in self.configurations))


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes


def check_install_args(*, days: int, renew_before_days: int) -> None:
    """ValueError for settings that cannot work (before anything talks to the cluster)."""
    check_days(days)
    if renew_before_days < 0:
        raise ValueError("--renew-before-days must not be negative")
    if days <= renew_before_days:
        raise ValueError(f"--days ({days}) must be more than --renew-before-days ({renew_before_days}), "
                         "or every run would renew the certificate")
    if renew_before_days >= CA_DAYS:
        raise ValueError(f"--renew-before-days ({renew_before_days}) must be less than the CA's {CA_DAYS} "
                         "days, or every run would replace the CA")


def install_ca(api_client: Any, *, namespace: str, service: str = "webhook", secret: str = "webhook-tls",
               ca_secret: str = "webhook-ca", webhook_configuration: str = "pod-runtime-webhook",
               days: int = 365, renew_before_days: int = 30, now: datetime | None = None) -> InstallResult:
    """Create or reuse the CA, issue the serving certificate when needed, store both, and
    put the caBundle into every webhook of both configurations. Safe to run again, and
    to run twice at once: a write that meets a concurrent change starts over from the reads.

    Certificates are dated by the API server's clock (the Date header of its answers),
    the clock that checks them, unless `now` is given."""
    check_install_args(days=days, renew_before_days=renew_before_days)
    kube = _Kube(api_client)
    created_ca: list[str] = []
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _install_once(kube, namespace=namespace, service=service, secret=secret,
                                 ca_secret=ca_secret, webhook_configuration=webhook_configuration,
                                 days=days, renew_before_days=renew_before_days, now=now,
                                 created_ca=created_ca)
        except ApiCallError as exc:
            if exc.status not in (409, 422) or attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _install_once(kube: _Kube, *, namespace: str, service: str, secret: str, ca_secret: str,
                  webhook_configuration: str, days: int, renew_before_days: int, now: datetime | None,
                  created_ca: list[str]) -> InstallResult:
    """One pass of install_ca; `created_ca` records across passes that one created or
    renewed the CA."""
    dns_names = service_dns_names(service, namespace)
    warnings: list[str] = []

    ca_obj = kube.get_secret(namespace, ca_secret)
    if now is None:
        local, server = datetime.now(timezone.utc), kube.server_now()
        now = server or local
        if server is not None and abs(server - local) > _SKEW_WARNING:
            ahead = "ahead of" if server > local else "behind"
            warnings.append(f"the API server's clock is {_duration(abs(server - local))} {ahead} this "
                            "machine's; certificates are dated by the API server's")
    ca = _read_ca(ca_obj, f"{namespace}/{ca_secret}") if ca_obj is not None else None
    tls_obj = kube.get_secret(namespace, secret)
    if tls_obj is not None and tls_obj.get("type") != TLS_SECRET_TYPE:
        raise ClusterError(f"Secret {namespace}/{secret} has type {tls_obj.get('type')!r}, not "
                           f"{TLS_SECRET_TYPE!r} (a Secret's type cannot change): delete it and run again")

    renew_before = timedelta(days=renew_before_days)
    expiring_ca = ca is not None and ca.cert.not_valid_after_utc - now <= renew_before
    if expiring_ca:
        # Serving certificates cannot outlive their CA: renewing them under this one
        # would give ever shorter ones, and none once it expires. A new CA goes into the
        # caBundle beside this one, as in a rotation.
        assert ca is not None
        reason = f"the CA expires {ca.cert.not_valid_after_utc:%Y-%m-%d} (within {renew_before_days} days)"
        ca = None
    elif ca is None:
        reason = "new CA"
    elif tls_obj is None:
        reason = ""
    else:
        reason = _why_reissue(tls_obj, ca, dns_names, now=now, renew_before=renew_before)

    issued: tuple[bytes, bytes] | None = None
    if ca is None or tls_obj is None or reason:
        ca, tls_pem, key_pem, ca_created = _issue(ca, service=service, namespace=namespace, days=days, now=now)
        issued = (tls_pem, key_pem)
        if ca_created:
            # The CA first: if anything after it fails, the next run reuses this CA. A
            # concurrent run that stored its CA first makes this a 409, and the retry
            # reads and uses that one.
            ca_data = {CA_CERT: ca.cert_pem, CA_KEY: ca.key_pem}
            if ca_obj is None:
                kube.create_secret(namespace, _secret_body(ca_secret, "Opaque", ca_data))
                created_ca.append("created")
            else:   # guarded by the resourceVersion read: a concurrent renewal wins
                kube.patch_secret(namespace, ca_secret, _data_patch(ca_obj, ca_data))
                created_ca.append("renewed")

    # The caBundle before the serving pair: the replicas serve the pair the Secret holds
    # now until the kubelet syncs the new one into their volume, so every webhook must
    # trust the CA of the new pair before it is stored, and keep trusting the CA of the
    # old one until the replicas have had time to load the new pair.
    # One configuration that cannot be read or patched (deleted, renamed, forbidden) must
    # not keep the other from its caBundle, nor hold back a renewal: its error is raised
    # once the rest is done.
    errors: list[ApiCallError] = []
    configs: list[tuple[str, dict[str, Any]]] = []
    for kind in (MUTATING, VALIDATING):
        try:
            configs.append((kind, kube.get_webhook_configuration(kind, webhook_configuration)))
        except ApiCallError as exc:
            if exc.status in (409, 422):
                raise
            errors.append(exc)
    current = _served_certificate(tls_obj)
    new_issued_at = now if issued else None
    ca_pem, previous, retire_at = _desired_bundle(ca, [obj for _, obj in configs], current=current,
                                                  new_issued_at=new_issued_at, now=now)
    if previous:
        names = ", ".join(f"{_subject(c)} (SHA-256 {c.fingerprint(hashes.SHA256()).hex()[:16]}, expires "
                          f"{c.not_valid_after_utc:%Y-%m-%d})" for c in previous)
        warnings.append(f"the caBundle also trusts the previous CA {names} while the replicas may still "
                        f"serve a certificate it issued; a run after {retire_at:%Y-%m-%d %H:%M} UTC "
                        "removes it")
    ca_bundle = base64.b64encode(ca_pem).decode("ascii")
    configurations = []
    for kind, obj in configs:
        try:
            configurations.append(_patch_ca_bundle(kube, kind, webhook_configuration, obj, ca_bundle))
        except ApiCallError as exc:
            if exc.status in (409, 422):
                raise
            errors.append(exc)

    if issued is not None and (current is None or not issued_by(current, ca.cert)):
        # A new CA (or no telling what the replicas serve): a configuration that exists
        # but did not get it would reject the new pair, while it may still accept the
        # one the replicas serve now.
        unsettled = [exc for exc in errors if exc.status != 404]
        if unsettled:
            raise unsettled[0]
        if previous and any(c.patched for c in configurations):
            _sleep(BUNDLE_PROPAGATION)
    if issued is not None:
        tls_pem, key_pem = issued
        certificate = "created" if tls_obj is None else "renewed"
        data = {TLS_CERT: tls_pem, TLS_KEY: key_pem, CA_CERT: ca.cert_pem}
        if tls_obj is None:
            kube.create_secret(namespace, _secret_body(secret, TLS_SECRET_TYPE, data))
            secret_action = "created"
        else:
            kube.patch_secret(namespace, secret, _data_patch(tls_obj, data))
            secret_action = "updated"
        served = x509.load_pem_x509_certificate(tls_pem)
    else:
        assert tls_obj is not None and current is not None   # a pair kept is one that was read
        certificate = "reused"
        data = _secret_data(tls_obj)
        if data.get(CA_CERT) != ca.cert_pem:
            kube.patch_secret(namespace, secret, _data_patch(tls_obj, {CA_CERT: ca.cert_pem}))
            secret_action = "updated"
        else:
            secret_action = "unchanged"
        served = current
    if errors:
        raise errors[0]

    return InstallResult(namespace=namespace, ca_secret=ca_secret, secret=secret,
                         ca=created_ca[-1] if created_ca else "reused", certificate=certificate,
                         secret_action=secret_action, reason=reason, not_after=served.not_valid_after_utc,
                         dns_names=dns_names, ca_bundle=ca_bundle, configurations=configurations,
                         warnings=warnings)


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return f"'{names[0].value}'" if names else cert.subject.rfc4514_string()


def _served_certificate(tls_obj: dict[str, Any] | None) -> x509.Certificate | None:
    """The certificate in the serving Secret as read (what the replicas serve, or will
    once the kubelet syncs it); None when there is none or it is unreadable."""
    if tls_obj is None:
        return None
    pem = _secret_data(tls_obj).get(TLS_CERT)
    try:
        return x509.load_pem_x509_certificate(pem) if pem else None
    except ValueError:
        return None


def _bundle_certificates(value: Any) -> list[x509.Certificate]:
    """The certificates of a caBundle value (base64 of PEM); what does not parse is left out."""
    if not isinstance(value, str) or not value:
        return []
    try:
        pem = base64.b64decode(value, validate=True)
        return x509.load_pem_x509_certificates(pem)
    except (binascii.Error, ValueError):
        return []


def _desired_bundle(ca: _CA, configs: list[dict[str, Any]], *, current: x509.Certificate | None,
                    new_issued_at: datetime | None,
                    now: datetime) -> tuple[bytes, list[x509.Certificate], datetime]:
    """(caBundle PEM, the previous CAs it keeps, when they may go).

    The bundle is the CA alone once the Secret has held a pair issued by it for
    CA_OVERLAP. Until then it also keeps every other CA that a webhook's caBundle holds
    (and that has not expired): the replicas may still serve a pair one of them issued."""
    ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
    if new_issued_at is not None:
        issued_at = new_issued_at
    elif current is not None and issued_by(current, ca.cert):
        issued_at = current.not_valid_before_utc + BACKDATE
    else:   # not reached: a pair not issued by the CA is reissued
        issued_at = now
    retire_at = issued_at + CA_OVERLAP
    previous: list[x509.Certificate] = []
    if now < retire_at:
        seen = {ca_der}
        for obj in configs:
            for webhook in obj.get("webhooks") or []:
                client_config = webhook.get("clientConfig") if isinstance(webhook, dict) else None
                if not isinstance(client_config, dict):
                    continue
                for cert in _bundle_certificates(client_config.get("caBundle")):
                    der = cert.public_bytes(serialization.Encoding.DER)
                    if der not in seen and cert.not_valid_after_utc > now:
                        seen.add(der)
                        previous.append(cert)
    if not previous:
        return ca.cert_pem, [], retire_at
    pem = ca.cert_pem if ca.cert_pem.endswith(b"\n") else ca.cert_pem + b"\n"
    return pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in previous), previous, retire_at


def _secret_data(obj: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        if isinstance(value, str):
            try:
                out[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
    return out


def _secret_body(name: str, secret_type: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": secret_type,
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "webhook-install-ca"}},
            "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}}


def _data_patch(current: dict[str, Any], data: dict[str, bytes]) -> list[dict[str, Any]]:
    """A JSON patch setting `data` keys, failing (422) if the Secret changed since it was read."""
    merged = dict(current.get("data") or {})
    merged.update({k: base64.b64encode(v).decode("ascii") for k, v in data.items()})
    ops: list[dict[str, Any]] = []
    version = (current.get("metadata") or {}).get("resourceVersion")
    if version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    ops.append({"op": "add", "path": "/data", "value": merged})
    return ops


def _read_ca(obj: dict[str, Any], where: str) -> _CA:
    data = _secret_data(obj)
    missing = [k for k in (CA_CERT, CA_KEY) if k not in data]
    if missing:
        raise ClusterError(f"Secret {where} exists but lacks {' and '.join(missing)}: fix or delete it "
                           "(deleting it creates a new CA)")
    try:
        cert = x509.load_pem_x509_certificate(data[CA_CERT])
        key = serialization.load_pem_private_key(data[CA_KEY], password=None)
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"Secret {where}: unreadable CA: {_one_line(str(exc))}") from None
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise ClusterError(f"Secret {where}: ca.key does not match ca.crt")
    return _CA(cert=cert, cert_pem=data[CA_CERT], key_pem=data[CA_KEY])


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _why_reissue(obj: dict[str, Any], ca: _CA, dns_names: tuple[str, ...], *, now: datetime,
                 renew_before: timedelta) -> str:
    """Why the serving pair in the Secret must be replaced; "" when it can stay."""
    data = _secret_data(obj)
    if TLS_CERT not in data or TLS_KEY not in data:
        return "tls.crt or tls.key missing"
    try:
        cert = x509.load_pem_x509_certificate(data[TLS_CERT])
        key = serialization.load_pem_private_key(data[TLS_KEY], password=None)
    except (ValueError, TypeError):
        return "unreadable tls.crt or tls.key"
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return "tls.key does not match tls.crt"
    if not issued_by(cert, ca.cert):
        return "not issued by the current CA"
    uncovered = uncovered_names(cert, dns_names)
    if uncovered:
        return f"does not cover {', '.join(uncovered)}"
    if cert.not_valid_before_utc > now:
        # Issued on a clock ahead of the API server's, which refuses it until then.
        return f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_after_utc - now <= renew_before:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d} (within {renew_before.days} days)"
    return ""


def _issue(ca: _CA | None, *, service: str, namespace: str, days: int,
           now: datetime) -> tuple[_CA, bytes, bytes, bool]:
    """(CA, tls.crt, tls.key, whether the CA is new), issued in a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="webhook-install-ca-") as tmp:
        out = Path(tmp)
        if ca is not None:
            (out / CA_CERT).write_bytes(ca.cert_pem)
            fd = os.open(out / CA_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(ca.key_pem)
        generated = generate(out, service=service, namespace=namespace, days=days, now=now)
        tls_pem, key_pem = (out / TLS_CERT).read_bytes(), (out / TLS_KEY).read_bytes()
        if ca is None:
            ca_pem = (out / CA_CERT).read_bytes()
            ca = _CA(cert=x509.load_pem_x509_certificate(ca_pem), cert_pem=ca_pem,
                     key_pem=(out / CA_KEY).read_bytes())
    return ca, tls_pem, key_pem, not generated.ca_reused


def _patch_ca_bundle(kube: _Kube, kind: str, name: str, obj: dict[str, Any],
                     ca_bundle: str) -> ConfigurationPatch:
    """Set `ca_bundle` on every webhook of `obj` (as read) that holds another value."""
    webhooks = obj.get("webhooks") or []
    ops: list[dict[str, Any]] = []
    for index, webhook in enumerate(webhooks):
        client_config = webhook.get("clientConfig")
        if isinstance(client_config, dict) and client_config.get("caBundle") == ca_bundle:
            continue
        # `test` the name so a concurrent edit that reorders webhooks fails (422, and
        # install_ca reads again) instead of putting the bundle on the wrong one.
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        if isinstance(client_config, dict):
            ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": ca_bundle})
        else:
            ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig", "value": {"caBundle": ca_bundle}})
    patched = sum(1 for op in ops if op["op"] == "test")
    if ops:
        kube.patch_webhook_configuration(kind, name, ops)
    return ConfigurationPatch(kind=kind, name=name, patched=patched, total=len(webhooks))


# -- report -------------------------------------------------------------------------------

STALE, WOULD_DENY, UNKNOWN = "stale", "would-deny", "unknown"


@dataclass
class Finding:
    namespace: str
    pod: str
    status: str                 # stale | would-deny | unknown (namespace labels)
    detail: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        key = "policies" if self.status == STALE else "violations"
        return {"namespace": self.namespace, "pod": self.pod, "status": self.status,
                "detail": self.detail, key: self.items}


@dataclass
class Report:
    pods: int                   # running pods examined
    findings: list[Finding]
    policy_revision: str


def report(api_client: Any, policies: PolicySet, *, namespace: str | None = None) -> Report:
    """Running pods (all namespaces when `namespace` is None) that are stale or would be denied."""
    from webhook.engine.namespaces import LabelsUnknown, needs_namespace_labels
    
    kube = _Kube(api_client)
    findings: list[Finding] = []
    count = 0
    pods = list(kube.list_pods(namespace))
    # Read after the pods, so that every listed pod's namespace is there (unless deleted since).
    labels = kube.namespace_labels(namespace) if needs_namespace_labels(policies) else {}
    gone = LabelsUnknown("the namespace was not found")
    for item in pods:
        if (item.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        count += 1
        pod_namespace = str((item.get("metadata") or {}).get("namespace") or "default")
        findings.extend(pod_findings(item, policies, namespace_labels=labels.get(pod_namespace, gone)))
    findings.sort(key=lambda f: (f.namespace, f.pod, f.status != STALE))
    return Report(pods=count, findings=findings, policy_revision=policies.revision)


def pod_findings(item: dict[str, Any], policies: PolicySet, *, namespace_labels: Any = None) -> list[Finding]:
    """What is wrong with one pod as the API server lists it: a stale ledger, would-deny.
    `namespace_labels`: its namespace's labels (engine.namespaces.NamespaceLabels), for
    policies with a namespaceSelector; a pod whose namespace's labels are unknown to
    such a policy is reported as `unknown`."""
    from webhook.engine.inject import inject
    from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabelsUnavailable
    from webhook.engine.ledger import LEDGER_ANNOTATION, LedgerError, parse_ledger
    from webhook.engine.validate import validate
    from webhook.offline import make_request

    # List items carry no kind/apiVersion; the engine tells pods from controllers by them.
    pod = {**item, "apiVersion": "v1", "kind": "Pod"}
    metadata = pod.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
    out: list[Finding] = []

    stale: list[dict[str, Any]] = []
    ledger = None
    current = {p.name: p.revision for p in policies.injectors}
    raw_ledger = (metadata.get("annotations") or {}).get(LEDGER_ANNOTATION)
    recorded: set[str] = set()
    if raw_ledger is not None:
        try:
            ledger = parse_ledger(raw_ledger)
        except LedgerError as exc:
            stale.append({"policy": "", "reason": "unreadable-ledger",
                          "detail": f"unreadable {LEDGER_ANNOTATION} annotation: {exc}"})
            ledger = None
        for record in ledger.policies if ledger else []:
            recorded.add(record.name)
            if record.name not in current:
                stale.append({"policy": record.name, "reason": "removed", "podRevision": record.revision,
                              "detail": f"{record.name} is no longer in the policy set"})
            elif record.revision != current[record.name]:
                stale.append({"policy": record.name, "reason": "revision", "podRevision": record.revision,
                              "currentRevision": current[record.name],
                              "detail": f"{record.name} revision {record.revision or '?'} "
                                        f"(current {current[record.name]})"})
    labels = NOT_GIVEN if namespace_labels is None else namespace_labels
    try:
        result = inject(pod, namespace=namespace, policies=policies, namespace_labels=labels)
        decision = validate(make_request(pod, namespace=namespace), policies, namespace_labels=labels)
    except NamespaceLabelsUnavailable as exc:
        return [Finding(namespace, name, UNKNOWN, str(exc), [])]
    for outcome in result.outcomes:
        if outcome.applied and not outcome.shadow and outcome.policy not in recorded:
            stale.append({"policy": outcome.policy, "reason": "missing",
                          "currentRevision": current.get(outcome.policy, ""),
                          "detail": f"{outcome.policy} would apply but is not injected"})
    if stale:
        out.append(Finding(namespace, name, STALE, "; ".join(s["detail"] for s in stale),
                           [{k: v for k, v in s.items() if k != "detail"} for s in stale]))

    denials: list[dict[str, Any]] = []
    if result.denial:
        # Injection itself would refuse this pod now (a conflict with a policy), so the
        # check for missing policies above could not see past the refusing one.
        refusing = next((o.policy for o in result.outcomes if not o.applied and o.reason.startswith("denied:")), "")
        denials.append({"policy": refusing, "rule": "injection", "check": "", "path": "",
                        "message": result.denial,
                        "detail": f"injection{f' ({refusing})' if refusing else ''}: {result.denial}"})
    if not decision.allowed:
        # A container that a policy's older revision injected is no longer what the policy
        # renders, so the reserved-name rule refuses it: that is the staleness above, not
        # a denial of its own. (Admission never takes the ledger's word; a report may.)
        outdated = {c for r in (ledger.policies if ledger else []) if r.name in
                    {s["policy"] for s in stale if s["reason"] in ("revision", "removed")} for c in r.containers}
        enforced = [v for v in decision.violations if v.action == "Enforce"]
        kept = [v for v in enforced if not (v.check == "reservedName" and v.container in outdated)]
        denials += [{"policy": v.policy, "rule": v.rule, "check": v.check, "path": v.path, "message": v.message,
                     "detail": f"{v.policy}/{v.rule}{f'[{v.check}]' if v.check else ''} {v.path}: {v.message}"}
                    for v in kept]
        if not enforced:
            denials.append({"policy": "", "rule": "", "check": "", "path": "",
                            "message": decision.message or "denied", "detail": decision.message or "denied"})
    if denials:
        out.append(Finding(namespace, name, WOULD_DENY, _one_line("; ".join(d["detail"] for d in denials)),
                           [{k: v for k, v in d.items() if k != "detail"} for d in denials]))
    return out
