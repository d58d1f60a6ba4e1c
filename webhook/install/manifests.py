"""The install YAML for clusters without cert-manager: `ollama-guard manifests` (design §13).

Owns the packaged copy of the kustomize base (`webhook/data/install-base.yaml`, the output of
`kubectl kustomize manifests/base`; tests/test_manifests.py fails when the two drift) and the
changes the self-signed overlay makes to it: the namespace, the image, the webhooks' caBundle
and the TLS Secret. The result equals `kubectl kustomize manifests/overlays/self-signed` in
substance. Reads only the packaged base and, in `read_tls_dir`, the files it is pointed at; it
never calls kubectl or the cluster.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from webhook.install.certs import read_cert_info, service_dns_names

DEFAULT_NAMESPACE = "ollama-guard-system"
DEFAULT_IMAGE = "ghcr.io/ollama-guard/ollama-guard:0.1.0"
SERVICE_NAME = "ollama-guard"
TLS_SECRET = "ollama-guard-tls"
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
BASE_RESOURCE = "data/install-base.yaml"
WEBHOOK_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
CONTAINER_NAME = "ollama-guard"

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The default namespace as a whole word: a value, `ns/name`, or a DNS name part.
_DEFAULT_NS_WORD = re.compile(rf"(?<![-a-z0-9]){re.escape(DEFAULT_NAMESPACE)}(?![-a-z0-9])")
# Kinds kubectl must create before the Secret is mounted (kustomize's legacy order).
_BEFORE_SECRET = frozenset(
    {
        "Namespace",
        "ResourceQuota",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
    }
)
_SECRET_LABELS = {"app.kubernetes.io/name": "ollama-guard", "app.kubernetes.io/part-of": "ollama-guard"}


def load_base_objects() -> list[dict[str, Any]]:
    """The objects of the kustomize base, as packaged (namespace ollama-guard-system)."""
    text = resources.files("webhook").joinpath(BASE_RESOURCE).read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def build_install_objects(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    ca_bundle_b64: str | None,
    image: str = DEFAULT_IMAGE,
    tls: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The install objects in apply order; see `render_install_yaml`."""
    _check_namespace(namespace)
    _check_image(image)
    secret_data = _tls_secret_data(tls, namespace) if tls is not None else None
    ca_bundle = _resolve_ca_bundle(ca_bundle_b64, secret_data)
    objects = [_renamespace(obj, namespace) for obj in load_base_objects()]
    for obj in objects:
        if obj.get("kind") == "Deployment":
            _set_image(obj, image)
        if obj.get("kind") in WEBHOOK_KINDS and ca_bundle is not None:
            for hook in obj.get("webhooks") or []:
                hook["clientConfig"] = {"caBundle": ca_bundle, **hook["clientConfig"]}
    if secret_data is not None:
        at = next((i for i, obj in enumerate(objects) if obj.get("kind") not in _BEFORE_SECRET), len(objects))
        objects.insert(at, _tls_secret(namespace, secret_data))
    return objects


def render_install_yaml(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    ca_bundle_b64: str | None,
    image: str = DEFAULT_IMAGE,
    tls: Mapping[str, str] | None = None,
) -> str:
    """The full install as multi-document YAML, ready for `kubectl apply -f -`.

    `ca_bundle_b64` is the webhooks' caBundle (base64 of the CA's PEM; see `ca_bundle_from_text`).
    `tls` maps `tls.crt`, `tls.key` and optionally `ca.crt` to PEM text: the Secret
    ollama-guard-tls is included and, without `ca_bundle_b64`, its ca.crt becomes the caBundle.
    Raises ValueError, naming the input, for a bad namespace, image, bundle or certificate.
    """
    objects = build_install_objects(namespace=namespace, ca_bundle_b64=ca_bundle_b64, image=image, tls=tls)
    has_bundle = any("caBundle" in hook["clientConfig"] for obj in objects for hook in obj.get("webhooks") or [])
    svc = f"{SERVICE_NAME}.{namespace}.svc"
    header = [
        f"# ollama-guard install for namespace {namespace}; apply with: kubectl apply -f FILE",
        f"# The serving certificate must be valid for {svc} (ollama-guard certs --namespace {namespace}).",
    ]
    if not any(obj.get("kind") == "Secret" for obj in objects):
        header.append(f"# Create Secret {namespace}/{TLS_SECRET} (tls.crt, tls.key) before the guard can start.")
    if not has_bundle:
        header.append(
            "# WARNING: no caBundle: kube-apiserver cannot verify the guard until you set one, and the "
            "webhooks with failurePolicy Fail deny until then."
        )
    body = "---\n".join(yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120) for obj in objects)
    return "\n".join(header) + "\n---\n" + body


def ca_bundle_from_text(text: str) -> str:
    """A caBundle from a CA certificate file's text: PEM, or the base64 of PEM (one line or wrapped)."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        pem = stripped.encode("ascii", "replace") + b"\n"
    else:
        pem = _decode_b64(stripped, what="caBundle")
    try:
        read_cert_info(pem)
    except ValueError as exc:
        raise ValueError(f"caBundle must be a PEM CA certificate or its base64: {exc}") from None
    return base64.b64encode(pem).decode("ascii")


def read_tls_dir(directory: Path) -> dict[str, str]:
    """tls.crt, tls.key and (when present) ca.crt from a folder written by `ollama-guard certs`."""
    found: dict[str, str] = {}
    for name in TLS_FILES:
        path = directory / name
        if path.is_file():
            found[name] = path.read_text(encoding="utf-8")
        elif name != "ca.crt":
            raise ValueError(f"{path}: missing; create it with `ollama-guard certs --out {directory}`")
    return found


def _check_namespace(namespace: str) -> None:
    if len(namespace) > 63 or not _LABEL.fullmatch(namespace):
        raise ValueError(
            f"namespace must be a DNS-1123 label (lowercase letters, digits and '-', at most 63), got {namespace!r}"
        )


def _check_image(image: str) -> None:
    if not image or any(ch.isspace() for ch in image):
        raise ValueError(f"image must be a container image reference without spaces, got {image!r}")


def _renamespace(obj: Any, namespace: str) -> Any:
    """Deep copy of `obj` with every mention of the default namespace replaced."""
    if namespace == DEFAULT_NAMESPACE:
        return copy.deepcopy(obj)
    if isinstance(obj, dict):
        return {key: _renamespace(value, namespace) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_renamespace(item, namespace) for item in obj]
    if isinstance(obj, str):
        return _DEFAULT_NS_WORD.sub(namespace, obj)
    return obj


def _set_image(deployment: dict[str, Any], image: str) -> None:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    guard = [c for c in containers if c.get("name") == CONTAINER_NAME]
    if len(guard) != 1:
        raise ValueError(f"packaged base: Deployment has no single container {CONTAINER_NAME!r}")
    guard[0]["image"] = image


def _tls_secret_data(tls: Mapping[str, str], namespace: str) -> dict[str, str]:
    unknown = sorted(set(tls) - set(TLS_FILES))
    missing = [name for name in ("tls.crt", "tls.key") if name not in tls]
    if unknown or missing:
        raise ValueError(f"tls takes {', '.join(TLS_FILES)}; missing {missing}, unknown {unknown}")
    try:
        info = read_cert_info(tls["tls.crt"].encode("ascii", "replace"))
    except ValueError as exc:
        raise ValueError(f"tls.crt: {exc}") from None
    wanted = service_dns_names(SERVICE_NAME, namespace)[2]
    if wanted not in info.dns_names:
        raise ValueError(
            f"tls.crt is valid for {', '.join(info.dns_names) or 'no DNS name'}, not {wanted}: "
            f"create it with `ollama-guard certs --namespace {namespace}`"
        )
    if "-----BEGIN" not in tls["tls.key"] or "PRIVATE KEY-----" not in tls["tls.key"]:
        raise ValueError("tls.key: not a PEM private key")
    return {name: base64.b64encode(tls[name].encode("utf-8")).decode("ascii") for name in TLS_FILES if name in tls}


def _resolve_ca_bundle(ca_bundle_b64: str | None, secret_data: Mapping[str, str] | None) -> str | None:
    from_secret = (secret_data or {}).get("ca.crt")
    if ca_bundle_b64 is None:
        return from_secret
    bundle = ca_bundle_from_text(ca_bundle_b64)
    if (
        from_secret is not None
        and _decode_b64(from_secret, what="ca.crt").strip() != _decode_b64(bundle, what="caBundle").strip()
    ):
        raise ValueError("caBundle is not the ca.crt given with the TLS files: the webhooks would not trust the guard")
    return bundle


def _decode_b64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: not valid base64") from None


def _tls_secret(namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "data": dict(sorted(data.items())),
        "kind": "Secret",
        "metadata": {"labels": dict(_SECRET_LABELS), "name": TLS_SECRET, "namespace": namespace},
        "type": "kubernetes.io/tls",
    }


class _Dumper(yaml.SafeDumper):
    """Block style, with multi-line strings (CEL, policy.yaml) as `|` literals."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
