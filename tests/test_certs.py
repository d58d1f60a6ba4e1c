"""webhook.install.certs: the CA + serving certificate bundle, its files, and the dev default."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import ssl
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from webhook.install import certs

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOT_VALID_NOW = "not valid at validation time"


@pytest.fixture(scope="module")
def bundle() -> certs.CertBundle:
    return certs.build_bundle(
        service="ollama-guard",
        namespace="gpu-guard",
        days=30,
        extra_dns=["localhost"],
        extra_ips=["127.0.0.1", "::1"],
        now=NOW,
    )


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> bytes:
    """A real TLS handshake over memory buffers; returns the server certificate (DER)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
            peer_in.write(out.read())
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return der


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "namespace", "expected"),
    [
        pytest.param(
            "ollama-guard",
            "ollama-guard-system",
            (
                "ollama-guard",
                "ollama-guard.ollama-guard-system",
                "ollama-guard.ollama-guard-system.svc",
                "ollama-guard.ollama-guard-system.svc.cluster.local",
            ),
            id="default",
        ),
        pytest.param("a", "b", ("a", "a.b", "a.b.svc", "a.b.svc.cluster.local"), id="one-letter"),
        pytest.param(
            "hook-1",
            "team-42",
            ("hook-1", "hook-1.team-42", "hook-1.team-42.svc", "hook-1.team-42.svc.cluster.local"),
            id="digits-and-dashes",
        ),
    ],
)
def test_service_dns_names(service: str, namespace: str, expected: tuple[str, ...]) -> None:
    assert certs.service_dns_names(service, namespace) == expected


@pytest.mark.parametrize(
    ("extra_dns", "extra_ips", "dns", "ips"),
    [
        pytest.param((), (), [], [], id="service-names-only"),
        pytest.param(["localhost"], ["127.0.0.1"], ["localhost"], ["127.0.0.1"], id="local"),
        pytest.param(
            ["webhook.example.com", "localhost", "webhook.example.com"],
            ["::1", "10.0.0.7", "::1"],
            ["webhook.example.com", "localhost"],
            ["::1", "10.0.0.7"],
            id="duplicates-dropped",
        ),
        pytest.param(["s.ns.svc"], [], [], [], id="extra-equal-to-a-service-name"),
    ],
)
def test_serving_cert_sans_are_exact(
    extra_dns: list[str], extra_ips: list[str], dns: list[str], ips: list[str]
) -> None:
    made = certs.build_bundle(service="s", namespace="ns", extra_dns=extra_dns, extra_ips=extra_ips)
    info = certs.read_cert_info(made.cert_pem)
    assert info.dns_names == ("s", "s.ns", "s.ns.svc", "s.ns.svc.cluster.local", *dns)
    assert info.ip_addresses == tuple(ips)
    assert info.subject_cn == "s.ns.svc"


# --- validity, keys, extensions ----------------------------------------------------------------


def test_validity_window_is_backdated_five_minutes(bundle: certs.CertBundle) -> None:
    for pem in (bundle.ca_cert_pem, bundle.cert_pem):
        info = certs.read_cert_info(pem)
        assert info.not_before == NOW - timedelta(minutes=5)
        assert info.not_after == NOW + timedelta(days=30)


def test_now_in_another_zone_is_converted_to_utc() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    made = certs.build_bundle(service="s", namespace="ns", days=1, now=plus_two)
    assert certs.read_cert_info(made.cert_pem).not_after == NOW + timedelta(days=1)


def test_keys_are_unencrypted_pkcs8_p256_matching_their_certificates(
    bundle: certs.CertBundle,
) -> None:
    for key_pem, cert_pem in (
        (bundle.ca_key_pem, bundle.ca_cert_pem),
        (bundle.key_pem, bundle.cert_pem),
    ):
        assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == load(cert_pem).public_key()
    assert bundle.key_pem != bundle.ca_key_pem


def test_ca_is_a_self_signed_leaf_only_ca(bundle: certs.CertBundle) -> None:
    ca = load(bundle.ca_cert_pem)
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    basic = ext(ca, x509.BasicConstraints)
    assert (basic.critical, basic.value.ca, basic.value.path_length) == (True, True, 0)
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical
    assert (usage.value.key_cert_sign, usage.value.crl_sign, usage.value.digital_signature) == (
        True,
        True,
        False,
    )
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    info = certs.read_cert_info(bundle.ca_cert_pem)
    assert (info.is_ca, info.subject_cn, info.dns_names) == (True, "ollama-guard-ca", ())


def test_serving_cert_is_a_server_auth_leaf_of_the_ca(bundle: certs.CertBundle) -> None:
    ca, leaf = load(bundle.ca_cert_pem), load(bundle.cert_pem)
    assert leaf.issuer == ca.subject
    basic = ext(leaf, x509.BasicConstraints)
    assert (basic.critical, basic.value.ca) == (True, False)
    usage = ext(leaf, x509.KeyUsage)
    assert usage.critical
    assert (usage.value.digital_signature, usage.value.key_cert_sign) == (True, False)
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest
    info = certs.read_cert_info(bundle.cert_pem)
    assert (info.is_ca, info.issuer_cn) == (False, "ollama-guard-ca")


def test_two_bundles_share_nothing(bundle: certs.CertBundle) -> None:
    other = certs.build_bundle(service="ollama-guard", namespace="gpu-guard", days=30, now=NOW)
    a, b = certs.read_cert_info(bundle.cert_pem), certs.read_cert_info(other.cert_pem)
    assert a.serial_number != b.serial_number
    assert a.sha256_fingerprint != b.sha256_fingerprint
    assert other.ca_cert_pem != bundle.ca_cert_pem


# --- the leaf verifies against the CA (and only that CA) -------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(x509.DNSName("ollama-guard.gpu-guard.svc"), id="svc"),
        pytest.param(x509.DNSName("ollama-guard.gpu-guard.svc.cluster.local"), id="fqdn"),
        pytest.param(x509.DNSName("localhost"), id="localhost"),
        pytest.param(x509.IPAddress(ipaddress.ip_address("127.0.0.1")), id="ipv4"),
        pytest.param(x509.IPAddress(ipaddress.ip_address("::1")), id="ipv6"),
    ],
)
def test_path_validation_against_the_ca(
    bundle: certs.CertBundle, name: x509.DNSName | x509.IPAddress
) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([load(bundle.ca_cert_pem)]))
        .time(NOW + timedelta(days=1))
        .build_server_verifier(name)
    )
    chain = verifier.verify(load(bundle.cert_pem), [])
    assert [c.subject for c in chain] == [
        load(bundle.cert_pem).subject,
        load(bundle.ca_cert_pem).subject,
    ]


@pytest.mark.parametrize(
    ("at", "name", "error"),
    [
        pytest.param(NOW + timedelta(days=31), "localhost", NOT_VALID_NOW, id="after-not-after"),
        pytest.param(NOW - timedelta(minutes=6), "localhost", NOT_VALID_NOW, id="before-backdate"),
        pytest.param(NOW, "elsewhere.example", "no matching subjectAltName", id="foreign-name"),
    ],
)
def test_path_validation_rejects(
    bundle: certs.CertBundle, at: datetime, name: str, error: str
) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([load(bundle.ca_cert_pem)]))
        .time(at)
        .build_server_verifier(x509.DNSName(name))
    )
    with pytest.raises(VerificationError, match=error):
        verifier.verify(load(bundle.cert_pem), [])


def test_real_tls_handshake_trusting_only_the_ca(tmp_path: Path) -> None:
    made = certs.build_bundle(service="s", namespace="ns", extra_dns=["localhost"])
    paths = certs.write_bundle(made, tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["tls.crt"], paths["tls.key"])
    client = ssl.create_default_context(cafile=paths["ca.crt"])

    der = handshake(server, client, "s.ns.svc")
    assert der == load(made.cert_pem).public_bytes(serialization.Encoding.DER)

    stranger = certs.build_bundle(service="s", namespace="ns")
    untrusting = ssl.create_default_context(cadata=stranger.ca_cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server, untrusting, "s.ns.svc")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server, client, "other.ns.svc")


def test_ca_bundle_b64_decodes_to_the_ca_pem(bundle: certs.CertBundle) -> None:
    encoded = bundle.ca_bundle_b64
    assert encoded.isascii()
    assert "\n" not in encoded
    assert base64.b64decode(encoded, validate=True) == bundle.ca_cert_pem


# --- input validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"service": "Ollama"}, "service must be a DNS-1123 label.*'Ollama'", id="upper"
        ),
        pytest.param({"service": "-svc"}, "service .* got '-svc'", id="leading-dash"),
        pytest.param({"service": "svc-"}, "service .* got 'svc-'", id="trailing-dash"),
        pytest.param({"service": "a.b"}, r"service .* got 'a\.b'", id="dotted"),
        pytest.param({"service": ""}, "service .* got ''", id="empty"),
        pytest.param({"service": "a" * 64}, f"service .* got '{'a' * 64}'", id="64-chars"),
        pytest.param(
            {"namespace": "kube_system"}, "namespace .* got 'kube_system'", id="underscore"
        ),
        pytest.param({"days": 0}, r"days must be an integer in 1\.\.3650, got 0", id="zero-days"),
        pytest.param({"days": 3651}, "days .* got 3651", id="too-many-days"),
        pytest.param({"days": True}, "days .* got True", id="bool-days"),
        pytest.param({"days": 1.5}, "days .* got 1.5", id="float-days"),
        pytest.param(
            {"extra_dns": ["ok.example", "bad_name"]}, "DNS name .* 'bad_name'", id="dns-underscore"
        ),
        pytest.param({"extra_dns": ["a..b"]}, r"DNS name .* 'a\.\.b'", id="dns-empty-label"),
        pytest.param({"extra_dns": [""]}, "DNS name .* got ''", id="dns-empty"),
        pytest.param(
            {"extra_ips": ["300.1.1.1"]}, "IPv4 or IPv6 address, got '300.1.1.1'", id="ip-range"
        ),
        pytest.param({"extra_ips": ["localhost"]}, "address, got 'localhost'", id="ip-hostname"),
        pytest.param({"now": datetime(2026, 1, 1)}, "now must be timezone-aware", id="naive-now"),
    ],
)
def test_bad_inputs_are_rejected_naming_the_value(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"service": "ollama-guard", "namespace": "ollama-guard-system"} | kwargs
    with pytest.raises(ValueError, match=message):
        certs.build_bundle(**args)


def test_read_cert_info_rejects_non_certificates(bundle: certs.CertBundle) -> None:
    with pytest.raises(ValueError, match="not a PEM certificate"):
        certs.read_cert_info(bundle.key_pem)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        certs.read_cert_info(b"garbage")


# --- files -------------------------------------------------------------------------------------


def test_write_bundle_writes_secret_style_files_with_private_keys_0600(
    bundle: certs.CertBundle, tmp_path: Path
) -> None:
    out = tmp_path / "nested" / "certs"
    paths = certs.write_bundle(bundle, out)
    assert paths == {name: out / name for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}
    assert {p.name: p.read_bytes() for p in paths.values()} == {
        "ca.crt": bundle.ca_cert_pem,
        "ca.key": bundle.ca_key_pem,
        "tls.crt": bundle.cert_pem,
        "tls.key": bundle.key_pem,
    }
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths.values()}
    assert modes == {"ca.crt": 0o644, "ca.key": 0o600, "tls.crt": 0o644, "tls.key": 0o600}
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]


def test_write_bundle_replaces_files_and_tightens_a_loose_key(
    bundle: certs.CertBundle, tmp_path: Path
) -> None:
    loose = tmp_path / "tls.key"
    loose.write_bytes(b"old")
    loose.chmod(0o666)
    old_inode = loose.stat().st_ino
    certs.write_bundle(bundle, tmp_path)
    assert loose.read_bytes() == bundle.key_pem
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert loose.stat().st_ino != old_inode  # replaced by rename, never rewritten in place


# --- the embedded dev default ------------------------------------------------------------------


def test_ensure_dev_certs_creates_once_then_reuses(tmp_path: Path) -> None:
    paths, created = certs.ensure_dev_certs(tmp_path, now=NOW)
    assert created is True
    assert set(paths) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    info = certs.read_cert_info(paths["tls.crt"].read_bytes())
    assert info.dns_names == (
        "ollama-guard",
        "ollama-guard.ollama-guard-system",
        "ollama-guard.ollama-guard-system.svc",
        "ollama-guard.ollama-guard-system.svc.cluster.local",
        "localhost",
    )
    assert info.ip_addresses == ("127.0.0.1", "::1")

    again, created_again = certs.ensure_dev_certs(tmp_path, now=NOW + timedelta(days=30))
    assert created_again is False
    assert again == paths
    assert certs.read_cert_info(again["tls.crt"].read_bytes()) == info


def _expire_soon(_: Path) -> timedelta:
    return timedelta(days=365) - timedelta(hours=23)


def _not_yet_valid(_: Path) -> timedelta:
    return -timedelta(minutes=10)


def _garbage_key(out: Path) -> timedelta:
    (out / "tls.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf")
    return timedelta()


def _missing_ca(out: Path) -> timedelta:
    (out / "ca.crt").unlink()
    return timedelta()


def _foreign_ca(out: Path) -> timedelta:
    (out / "ca.crt").write_bytes(certs.build_bundle(service="x", namespace="y").ca_cert_pem)
    return timedelta()


def _foreign_key(out: Path) -> timedelta:
    (out / "tls.key").write_bytes(certs.build_bundle(service="x", namespace="y").key_pem)
    return timedelta()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_expire_soon, id="expires-within-a-day"),
        pytest.param(_not_yet_valid, id="not-yet-valid"),
        pytest.param(_garbage_key, id="unparsable-key"),
        pytest.param(_missing_ca, id="missing-ca"),
        pytest.param(_foreign_ca, id="signed-by-another-ca"),
        pytest.param(_foreign_key, id="key-does-not-match"),
    ],
)
def test_ensure_dev_certs_regenerates_an_unusable_bundle(
    tmp_path: Path, damage: Callable[[Path], timedelta]
) -> None:
    first, _ = certs.ensure_dev_certs(tmp_path, now=NOW)
    old = certs.read_cert_info(first["tls.crt"].read_bytes())
    later = NOW + damage(tmp_path)

    paths, created = certs.ensure_dev_certs(tmp_path, now=later)

    assert created is True
    new = certs.read_cert_info(paths["tls.crt"].read_bytes())
    assert new.sha256_fingerprint != old.sha256_fingerprint
    assert new.not_before == later - timedelta(minutes=5)
    _, created_again = certs.ensure_dev_certs(tmp_path, now=later)
    assert created_again is False


def test_ensure_dev_certs_keeps_a_bundle_with_more_than_a_day_left(tmp_path: Path) -> None:
    certs.ensure_dev_certs(tmp_path, now=NOW)
    _, created = certs.ensure_dev_certs(tmp_path, now=NOW + timedelta(days=363, hours=23))
    assert created is False
