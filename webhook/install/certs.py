"""Webhook certificates: a private CA and the serving certificate it signs (design §13).

Owns everything X.509 and the only import of `cryptography` in the package. Building a bundle
returns PEM bytes (`build_bundle`); writing them is a separate step (`write_bundle`) so callers
decide where they go (files, a Secret, stdout). `ensure_dev_certs` is the embedded default for
running outside a cluster. The clock is read only when the caller does not pass `now`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MIN_DAYS = 1
MAX_DAYS = 3650
BACKDATE = timedelta(minutes=5)  # tolerate clock skew between us and kube-apiserver
RENEW_BEFORE = timedelta(days=1)

DEV_SERVICE = "ollama-guard"
DEV_NAMESPACE = "ollama-guard-system"
DEV_EXTRA_DNS = ("localhost",)
DEV_EXTRA_IPS = ("127.0.0.1", "::1")

# The key names of a kubernetes.io/tls Secret plus ca.crt, as cert-manager writes them.
CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
_PRIVATE_FILES = frozenset({CA_KEY, TLS_KEY})

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_NAME_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class CertBundle:
    """A CA and the serving certificate it signed, all as PEM (keys PKCS#8, unencrypted)."""

    ca_cert_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_bundle_b64(self) -> str:
        """The CA certificate as the webhook configuration's `caBundle` wants it."""
        return base64.b64encode(self.ca_cert_pem).decode("ascii")


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a certificate says about itself, for checks and for humans."""

    subject_cn: str | None
    issuer_cn: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    is_ca: bool
    serial_number: int
    sha256_fingerprint: str  # lowercase hex of the DER encoding


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names kube-apiserver may use for a Service: short, namespaced, svc, cluster.local."""
    _check_label("service", service)
    _check_label("namespace", namespace)
    svc = f"{service}.{namespace}.svc"
    return (service, f"{service}.{namespace}", svc, f"{svc}.cluster.local")


def build_bundle(
    *,
    service: str,
    namespace: str,
    days: int = 365,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    now: datetime | None = None,
) -> CertBundle:
    """Generate a fresh CA and a serving certificate for `service` in `namespace`."""
    names = service_dns_names(service, namespace)
    if isinstance(days, bool) or not isinstance(days, int) or not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"days must be an integer in {MIN_DAYS}..{MAX_DAYS}, got {days!r}")
    dns = list(dict.fromkeys([*names, *(_check_dns_name(name) for name in extra_dns)]))
    ips = list(dict.fromkeys(_parse_ip(ip) for ip in extra_ips))
    start = _aware(now) - BACKDATE
    end = start + BACKDATE + timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service}-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        _base_builder(subject=ca_name, issuer=ca_name, key=ca_key, start=start, end=end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])])
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (
        _base_builder(subject=subject, issuer=ca_name, key=key, start=start, end=end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        ca_key_pem=_key_pem(ca_key),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )


def write_bundle(bundle: CertBundle, out_dir: Path) -> dict[str, Path]:
    """Write ca.crt, ca.key, tls.crt, tls.key into `out_dir`, each atomically; keys mode 0600."""
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = {
        CA_CERT: bundle.ca_cert_pem,
        CA_KEY: bundle.ca_key_pem,
        TLS_KEY: bundle.key_pem,
        TLS_CERT: bundle.cert_pem,
    }
    paths: dict[str, Path] = {}
    for name, data in contents.items():
        paths[name] = out_dir / name
        _write_atomic(paths[name], data, mode=0o600 if name in _PRIVATE_FILES else 0o644)
    return paths


def read_cert_info(cert_pem: bytes) -> CertInfo:
    """Parse one PEM certificate; a ValueError says the input is not one."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(
        subject_cn=_common_name(cert.subject),
        issuer_cn=_common_name(cert.issuer),
        dns_names=dns,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        serial_number=cert.serial_number,
        sha256_fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def ensure_dev_certs(out_dir: Path, *, now: datetime | None = None) -> tuple[dict[str, Path], bool]:
    """Reuse a valid dev bundle in `out_dir` or write a new one; returns (paths, created).

    Valid means tls.crt, tls.key and ca.crt parse, the key matches the certificate, the CA
    signed it, and it is valid now and for more than RENEW_BEFORE. The paths always include
    ca.crt, tls.crt and tls.key; ca.key is included when the file exists.
    """
    at = _aware(now)
    if _dev_bundle_usable(out_dir, at):
        names = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)
        paths = {name: out_dir / name for name in names if (out_dir / name).exists()}
        return paths, False
    bundle = build_bundle(
        service=DEV_SERVICE,
        namespace=DEV_NAMESPACE,
        extra_dns=DEV_EXTRA_DNS,
        extra_ips=DEV_EXTRA_IPS,
        now=at,
    )
    return write_bundle(bundle, out_dir), True


def _dev_bundle_usable(out_dir: Path, at: datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((out_dir / TLS_CERT).read_bytes())
        ca = x509.load_pem_x509_certificate((out_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((out_dir / TLS_KEY).read_bytes(), None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        # Missing, unreadable, unparsable, encrypted, or not signed by this CA.
        return False
    if key.public_key() != cert.public_key():
        return False
    valid_from = max(cert.not_valid_before_utc, ca.not_valid_before_utc)
    valid_until = min(cert.not_valid_after_utc, ca.not_valid_after_utc)
    return valid_from <= at and valid_until - at > RENEW_BEFORE


def _base_builder(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _check_label(what: str, value: str) -> None:
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} must be a DNS-1123 label (lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most 63 characters), got {value!r}"
        )


def _check_dns_name(value: str) -> str:
    labels = value.split(".") if isinstance(value, str) else []
    if (
        not labels
        or len(value) > 253
        or not all(len(label) <= 63 and _DNS_NAME_LABEL.fullmatch(label) for label in labels)
    ):
        raise ValueError(f"extra DNS name must be a DNS name like 'webhook.example', got {value!r}")
    return value


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"extra IP must be an IPv4 or IPv6 address, got {value!r}") from None


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(UTC)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    # A temp file in the same directory + os.replace: readers see the old or the new file, never
    # a partial one; the mode is set before any secret byte is written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
