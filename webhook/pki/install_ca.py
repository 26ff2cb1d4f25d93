"""`webhook install-ca`: keep the serving certificate's Secret, the CA's Secret and the
webhook configurations' caBundle consistent, on the cluster's own objects.

It needs only: Secret get/create/patch (the two Secrets it names) and get/patch on the two
webhook configurations, the verbs the self-managed overlay's RBAC grants. Printing is the
command line's business; these functions return results.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from webhook.pki.certs import (BACKDATE, CA, CA_CERT, CA_DAYS, CA_KEY, TLS_CERT, TLS_KEY, check_days, issue_serving,
                              issued_by, load_ca, new_ca, service_dns_names, why_reissue)
from webhook.kube.client import MUTATING, VALIDATING, ApiCallError, ClusterError, Kube, one_line

TLS_SECRET_TYPE = "kubernetes.io/tls"
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
    kube = Kube(api_client)
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


def _install_once(kube: Kube, *, namespace: str, service: str, secret: str, ca_secret: str,
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


def _desired_bundle(ca: CA, configs: list[dict[str, Any]], *, current: x509.Certificate | None,
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


def _read_ca(obj: dict[str, Any], where: str) -> CA:
    data = _secret_data(obj)
    missing = [k for k in (CA_CERT, CA_KEY) if k not in data]
    if missing:
        raise ClusterError(f"Secret {where} exists but lacks {' and '.join(missing)}: fix or delete it "
                           "(deleting it creates a new CA)")
    try:
        return load_ca(data[CA_CERT], data[CA_KEY])
    except ValueError as exc:
        raise ClusterError(f"Secret {where}: {one_line(str(exc))}") from None


def _why_reissue(obj: dict[str, Any], ca: CA, dns_names: tuple[str, ...], *, now: datetime,
                 renew_before: timedelta) -> str:
    """Why the serving pair in the Secret must be replaced; "" when it can stay."""
    data = _secret_data(obj)
    if TLS_CERT not in data or TLS_KEY not in data:
        return "tls.crt or tls.key missing"
    return why_reissue(data[TLS_CERT], data[TLS_KEY], ca.cert, dns_names, now=now, renew_before=renew_before)


def _issue(ca: CA | None, *, service: str, namespace: str, days: int,
           now: datetime) -> tuple[CA, bytes, bytes, bool]:
    """(CA, tls.crt, tls.key, whether the CA is new): in memory, no key touches the disk."""
    created = ca is None
    if ca is None:
        ca = new_ca(service=service, namespace=namespace, now=now)
    pair = issue_serving(ca, dns_names=service_dns_names(service, namespace), now=now, days=days)
    return ca, pair.cert_pem, pair.key_pem, created


def _patch_ca_bundle(kube: Kube, kind: str, name: str, obj: dict[str, Any],
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
