"""Who is subject to the guard: reading a raw Pod dict into frozen `PodFacts` (design §3).

Recognises Ollama pods (image repository ending in `ollama/ollama`, the `app.kubernetes.io/name:
ollama` label, or the `ollama-guard.io/models` annotation), GPU tenants (a request of one of the
policy's GPU resource names), MIG requests and mirror pods. Malformed GPU quantities raise
`DeclarationError` naming the container. Pure: plain dicts in, frozen values out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.core.quantity import QuantityError, parse_quantity, whole_number
from webhook.core.rawdict import items, mapping, str_map

ANN_MODELS = "ollama-guard.io/models"
ANN_VRAM = "ollama-guard.io/vram"
ANN_CONTEXT = "ollama-guard.io/context-length"
ANN_DEMAND = "ollama-guard.io/vram-demand"
ANN_ESTIMATE = "ollama-guard.io/estimate"
ANN_MIRROR = "kubernetes.io/config.mirror"
OLLAMA_LABEL = ("app.kubernetes.io/name", "ollama")
MIG_PREFIX = "nvidia.com/mig-"
TERMINAL_PHASES = ("Succeeded", "Failed")
MAX_GPUS_PER_POD = 64
#: the extended resource the guard publishes per node and requests per pod (design §14), whole MiB
RESOURCE_VRAM = "ollama-guard.io/vram-mib"
#: 1 PiB in MiB: far above any GPU, and what `_vram_request` accepts at most
MAX_VRAM_MIB = 1 << 30


class DeclarationError(ValueError):
    """A pod declares something the guard cannot accept (answered with status code 400)."""


class QuantityDeclarationError(DeclarationError):
    """A declared VRAM quantity that is not one (not whole bytes, below 1 MiB, garbage): refused in
    every enforcement mode, since no estimate or warning can stand in for it (issue 18)."""


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    index: int
    name: str
    image: str
    init: bool
    is_ollama: bool
    gpus: int
    #: env name -> literal value; None when the value comes from `valueFrom` (unknown here).
    env: Mapping[str, str | None]
    commands: tuple[tuple[str, ...], ...]
    #: the container's `ollama-guard.io/vram-mib` request (the larger of limit and request), MiB; 0: none
    vram_mib: int = 0


@dataclass(frozen=True, slots=True)
class PodFacts:
    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    node_name: str
    phase: str
    deleting: bool
    mirror: bool
    containers: tuple[ContainerFacts, ...]
    gpu_resource: str
    gpus: int
    uses_mig: bool
    is_ollama: bool
    #: the pod's `ollama-guard.io/vram-mib` request as the scheduler sums it (app containers, or the
    #: largest init container when that is more), MiB; 0: the pod does not request the resource
    vram_mib: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_gpu_tenant(self) -> bool:
        return self.gpus > 0

    @property
    def active(self) -> bool:
        """Counts against a node: not finished and not being deleted."""
        return self.phase not in TERMINAL_PHASES and not self.deleting

    @property
    def ollama_containers(self) -> tuple[ContainerFacts, ...]:
        return tuple(c for c in self.containers if c.is_ollama and not c.init)

    def renamed(self, name: str, uid: str) -> PodFacts:
        """These facts for another pod of the same content (a replica): only the name and UID differ."""
        return PodFacts(self.namespace, name, uid, self.labels, self.annotations, self.node_name, self.phase,
                        self.deleting, self.mirror, self.containers, self.gpu_resource, self.gpus, self.uses_mig,
                        self.is_ollama, self.vram_mib)


def is_ollama_image(image: str) -> bool:
    """True for any registry, tag or digest of the `ollama/ollama` repository."""
    if "ollama" not in image.lower():
        return False  # what nearly every image says; the repository below is a part of `image`
    repo = image.strip().split("@", 1)[0]
    last_slash = repo.rfind("/")
    colon = repo.rfind(":")
    if colon > last_slash:
        repo = repo[:colon]
    repo = repo.lower()
    return repo == "ollama/ollama" or repo.endswith("/ollama/ollama")


def could_be_subject(pod: Mapping[str, Any], *, gpu_resources: Sequence[str]) -> bool:
    """A cheap pre-filter: False only for pods that are neither Ollama pods nor GPU/MIG requesters.

    Most pods of a cluster are CPU pods; skipping the full `read_pod` for them keeps building a
    100,000-pod view fast. Anything malformed returns True (the full reader reports it).
    """
    meta = mapping(pod.get("metadata"))
    if mapping(meta.get("labels")).get(OLLAMA_LABEL[0]) == OLLAMA_LABEL[1] or ANN_MODELS in mapping(
        meta.get("annotations")
    ):
        return True
    spec = mapping(pod.get("spec"))
    for field in ("containers", "initContainers"):
        for container in items(spec.get(field)):
            if not isinstance(container, Mapping):
                return True
            resources = mapping(container.get("resources"))
            for section in (resources.get("limits"), resources.get("requests")):
                if section and _names_gpu(mapping(section), gpu_resources):
                    return True
            if is_ollama_image(str(container.get("image") or "")):
                return True
    return False


def _names_gpu(section: Mapping[str, Any], gpu_resources: Sequence[str]) -> bool:
    """Whether a `limits` or `requests` section names a GPU resource or a MIG profile."""
    if not section.keys().isdisjoint(gpu_resources):
        return True
    return any((key if type(key) is str else str(key)).startswith(MIG_PREFIX) for key in section)


def read_pod(pod: Mapping[str, Any], *, gpu_resources: Sequence[str], namespace: str = "") -> PodFacts:
    """Read the facts the guard needs from a raw Pod (as the API server sends it)."""
    meta = mapping(pod.get("metadata"))
    spec = mapping(pod.get("spec"))
    labels = str_map(meta.get("labels"))
    annotations = str_map(meta.get("annotations"))
    containers: list[ContainerFacts] = []
    resources_seen: set[str] = set()
    app = init_max = vram_app = vram_init = 0
    for init, field in ((False, "containers"), (True, "initContainers")):
        for index, raw in enumerate(items(spec.get(field))):
            facts = _read_container(mapping(raw), index, init, gpu_resources, resources_seen)
            containers.append(facts)
            if init:
                init_max = max(init_max, facts.gpus)
                vram_init = max(vram_init, facts.vram_mib)
            else:
                app += facts.gpus
                vram_app += facts.vram_mib
    gpu_resource = next((r for r in gpu_resources if r in resources_seen), gpu_resources[0])
    is_ollama = (
        any(c.is_ollama for c in containers)
        or labels.get(OLLAMA_LABEL[0]) == OLLAMA_LABEL[1]
        or ANN_MODELS in annotations
    )
    status = mapping(pod.get("status"))
    name, uid = pod_identity(meta)
    return PodFacts(
        namespace=str(meta.get("namespace") or namespace),
        name=name,
        uid=uid,
        labels=labels,
        annotations=annotations,
        node_name=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        mirror=ANN_MIRROR in annotations,
        containers=tuple(containers),
        gpu_resource=gpu_resource,
        gpus=max(app, init_max),
        uses_mig=any(r.startswith(MIG_PREFIX) for r in resources_seen),
        is_ollama=is_ollama,
        vram_mib=max(vram_app, vram_init),
    )


def pod_identity(meta: Mapping[str, Any]) -> tuple[str, str]:
    """(name, UID) as `read_pod` reads them from a pod's metadata (the generateName before a name)."""
    return str(meta.get("name") or meta.get("generateName") or ""), str(meta.get("uid") or "")


def _read_container(
    raw: Mapping[str, Any], index: int, init: bool, gpu_resources: Sequence[str], resources_seen: set[str]
) -> ContainerFacts:
    """One container's facts; the resource names it requests are added to `resources_seen`."""
    name = str(raw.get("name") or f"#{index}")
    resources = mapping(raw.get("resources"))
    limits = mapping(resources.get("limits"))
    requests = mapping(resources.get("requests"))
    resources_seen.update(map(str, limits))
    resources_seen.update(map(str, requests))
    gpus = vram = 0
    if limits or requests:
        for resource in gpu_resources:
            value = limits.get(resource, requests.get(resource))
            if value is not None:
                gpus += _gpu_count(value, container=name, resource=resource)
        if RESOURCE_VRAM in limits or RESOURCE_VRAM in requests:
            pair = (limits.get(RESOURCE_VRAM), requests.get(RESOURCE_VRAM))
            vram = max(_vram_request(v, container=name) for v in pair)
    env: dict[str, str | None] = {}
    for item in items(raw.get("env")):
        entry = mapping(item)
        key = entry.get("name")
        if isinstance(key, str):
            value = entry.get("value")
            env[key] = None if "valueFrom" in entry else value if type(value) is str else _text(value)
    commands: tuple[tuple[str, ...], ...] = ()
    argv = (*items(raw.get("command")), *items(raw.get("args")))
    if argv:
        commands = (tuple(map(str, argv)),)
    lifecycle = raw.get("lifecycle")
    if lifecycle:
        hook = items(mapping(mapping(mapping(lifecycle).get("postStart")).get("exec")).get("command"))
        if hook:
            commands = (*commands, tuple(map(str, hook)))
    image = str(raw.get("image") or "")
    return ContainerFacts(
        index=index,
        name=name,
        image=image,
        init=init,
        is_ollama=is_ollama_image(image),
        gpus=gpus,
        env=env,
        commands=commands,
        vram_mib=vram,
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _gpu_count(value: object, *, container: str, resource: str) -> int:
    if (
        type(value) is str
        and len(value) <= 2
        and value.isascii()
        and value.isdigit()
        and int(value) <= MAX_GPUS_PER_POD
    ):
        return int(value)  # "1", "4": what nearly every pod says
    try:
        amount = parse_quantity(value if isinstance(value, (str, int)) and not isinstance(value, bool) else str(value))
    except QuantityError as exc:
        raise DeclarationError(f"container {container!r}: {resource} {exc}") from None
    if amount != amount.to_integral_value() or not 0 <= amount <= MAX_GPUS_PER_POD:
        raise DeclarationError(
            f"container {container!r}: {resource} must be a whole number of GPUs from 0 to "
            f"{MAX_GPUS_PER_POD}, got {value!r}"
        )
    return int(amount)


def _vram_request(value: object, *, container: str) -> int:
    """A container's `ollama-guard.io/vram-mib` limit or request: a whole number of MiB (0 when absent).

    Extended resources are whole numbers (kube-apiserver answers 422 to `1.5`); anything else is a
    declaration the author must fix, named here, never a silent zero.
    """
    if value is None:
        return 0
    if type(value) is str and (plain := whole_number(value, maximum=MAX_VRAM_MIB)) is not None:
        return plain  # "2048": what the guard's own mutation writes; exactly what parse_quantity reads
    fix = f"container {container!r}: {RESOURCE_VRAM} must be a whole number of MiB from 0 to {MAX_VRAM_MIB}"
    try:
        amount = parse_quantity(value if isinstance(value, (str, int)) and not isinstance(value, bool) else str(value))
    except QuantityError:
        raise DeclarationError(f"{fix}, got {str(value)[:40]!r}") from None
    if amount != amount.to_integral_value() or not 0 <= amount <= MAX_VRAM_MIB:
        raise DeclarationError(f"{fix}, got {str(value)[:40]!r}")
    return int(amount)
