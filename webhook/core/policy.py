"""Cluster defaults + namespace annotations -> the effective policy for one namespace.

`ClusterPolicy` is the guard's own configuration (filled by `config.py` from the environment and
an optional YAML file); `resolve_namespace_policy` overlays a namespace's `ollama-guard.io/*`
annotations on it. A malformed annotation never falls back to a default: it is reported as a
`PolicyProblem` naming the annotation and the accepted form, and the admission layer denies.
Pure: no I/O, no environment.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from webhook.core.quantity import QuantityError, parse_vram_mib, whole_number

PREFIX = "ollama-guard.io/"
Enforcement = Literal["enforce", "warn", "audit", "off"]
ENFORCEMENTS: tuple[Enforcement, ...] = ("enforce", "warn", "audit", "off")

ANN_ENFORCEMENT = PREFIX + "enforcement"
ANN_MAX_LOADED = PREFIX + "max-loaded-models"
ANN_CONTEXT = PREFIX + "context-length"
ANN_PARALLEL = PREFIX + "num-parallel"
ANN_QUOTA = PREFIX + "vram-quota"
ANN_ALLOWED = PREFIX + "allowed-models"
ANN_DRIVER_CAP = PREFIX + "driver-memory-limit"

#: Upper bounds that keep an annotation within what Ollama can run (and our arithmetic sane).
LIMITS = {ANN_MAX_LOADED: 64, ANN_CONTEXT: 1 << 21, ANN_PARALLEL: 256}


class PolicyDefaults(BaseModel):
    """The settings that mean the same in the guard's configuration and in its effective policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enforcement: Enforcement = "enforce"
    max_loaded_models: int = Field(default=1, ge=1, le=64)
    context_length: int = Field(default=8192, ge=256, le=1 << 21)
    num_parallel: int = Field(default=1, ge=1, le=256)
    allowed_models: tuple[str, ...] = ("*",)
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
    policy_admin_groups: tuple[str, ...] = ("system:masters",)
    policy_admin_users: tuple[str, ...] = ()
    safety_margin: float = Field(default=0.10, ge=0.0, le=10.0)
    ollama_requires_gpu: bool = True
    reservation_ttl_seconds: float = Field(default=60.0, gt=0)
    #: what "no candidate node has the free VRAM right now" means at admission (design §14): `warn`
    #: admits with a warning and the pod waits Pending on the scheduler's own
    #: `Insufficient ollama-guard.io/vram-mib` (preemption and autoscalers can act); `deny` refuses it
    capacity_at_admission: Literal["warn", "deny"] = "warn"
    #: set NVIDIA_GPU_MEMORY_LIMIT/_REQUEST on Ollama containers to the per-GPU demand (design §8)
    driver_memory_limit: bool = True
    #: set OLLAMA_FLASH_ATTENTION=1 on Ollama containers that lack it, so the estimate may count
    #: flash attention on for the models Ollama runs with it (design §5.1, §8); turn off where the
    #: GPUs cannot (NVIDIA compute capability below 6.0, or 7.2: Ollama then runs without it)
    flash_attention: bool = True


class ClusterPolicy(PolicyDefaults):
    """Cluster-wide defaults and guard settings (design §9), quantities resolved to MiB."""

    exempt_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease", "ollama-guard-system")
    #: per pod, on top of its runners (design §5.1: the Ollama server holds no CUDA context of its
    #: own, each runner's is in `runner_overhead_mib`); for stacks whose server process does
    cuda_context_overhead_mib: int = Field(default=0, ge=0, le=1 << 20)
    #: per loaded model: the fixed cost of its runner process, CUDA context + cuBLAS (design §5.1)
    runner_overhead_mib: int = Field(default=589, ge=0, le=1 << 20)
    #: None means one replica's even share of the node: gpu.memory / gpu.replicas.
    default_tenant_vram_mib: int | None = Field(default=None, ge=0)


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    annotation: str
    value: str
    expected: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 80 else f"{self.value[:60]}… ({len(self.value)} characters)"
        return f'namespace annotation {self.annotation}="{shown}" is invalid: {self.expected}'


@dataclass(frozen=True, slots=True)
class NamespacePolicy:
    """The policy in force for one namespace."""

    namespace: str
    enforcement: Enforcement
    exempt: bool
    max_loaded_models: int
    context_length: int
    num_parallel: int
    vram_quota_mib: int | None
    allowed_models: tuple[str, ...]
    problems: tuple[PolicyProblem, ...] = ()
    driver_memory_limit: bool = True
    #: the guard injects OLLAMA_FLASH_ATTENTION=1 where it is absent (the cluster's `flash_attention`)
    flash_attention: bool = True

    @property
    def active(self) -> bool:
        """Whether the guard looks at this namespace at all."""
        return not self.exempt and self.enforcement != "off"

    def model_allowed(self, tag: str) -> bool:
        return any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.allowed_models)


def resolve_namespace_policy(
    cluster: ClusterPolicy, namespace: str, annotations: Mapping[str, str] | None
) -> NamespacePolicy:
    """Overlay a namespace's annotations on the cluster defaults."""
    ann = annotations or {}
    problems: list[PolicyProblem] = []

    enforcement: Enforcement = cluster.enforcement
    raw = ann.get(ANN_ENFORCEMENT)
    if raw is not None:
        value = raw.strip().lower()
        if value in ENFORCEMENTS:
            enforcement = value
        else:
            problems.append(PolicyProblem(ANN_ENFORCEMENT, raw, "use one of enforce, warn, audit, off"))

    def integer(name: str, default: int) -> int:
        raw_int = ann.get(name)
        if raw_int is None:
            return default
        limit = LIMITS[name]
        value = whole_number(raw_int.strip(), minimum=1, maximum=limit)
        if value is not None:
            return value
        problems.append(PolicyProblem(name, raw_int, f"use a whole number from 1 to {limit}"))
        return default

    quota: int | None = None
    raw_quota = ann.get(ANN_QUOTA)
    if raw_quota is not None:
        try:
            quota = parse_vram_mib(raw_quota, allow_zero=True)
        except QuantityError as exc:
            problems.append(PolicyProblem(ANN_QUOTA, raw_quota, f"{exc}"))

    allowed = cluster.allowed_models
    raw_allowed = ann.get(ANN_ALLOWED)
    if raw_allowed is not None:
        globs = tuple(g.strip().lower() for g in raw_allowed.split(",") if g.strip())
        if globs and all(_plausible_glob(g) for g in globs):
            allowed = globs
        else:
            problems.append(
                PolicyProblem(ANN_ALLOWED, raw_allowed, 'use comma-separated globs such as "llama3.*, qwen2.5:*"')
            )

    driver_cap = cluster.driver_memory_limit
    raw_cap = ann.get(ANN_DRIVER_CAP)
    if raw_cap is not None:
        if raw_cap.strip().lower() in ("on", "off"):
            driver_cap = raw_cap.strip().lower() == "on"
        else:
            problems.append(PolicyProblem(ANN_DRIVER_CAP, raw_cap, 'use "on" or "off"'))

    return NamespacePolicy(
        namespace=namespace,
        enforcement=enforcement,
        exempt=namespace in cluster.exempt_namespaces,
        max_loaded_models=integer(ANN_MAX_LOADED, cluster.max_loaded_models),
        context_length=integer(ANN_CONTEXT, cluster.context_length),
        num_parallel=integer(ANN_PARALLEL, cluster.num_parallel),
        vram_quota_mib=quota,
        allowed_models=allowed,
        problems=tuple(problems),
        driver_memory_limit=driver_cap,
        flash_attention=cluster.flash_attention,
    )


def _plausible_glob(glob: str) -> bool:
    return len(glob) <= 200 and all(ch.isalnum() or ch in "*?[]!._:/-@" for ch in glob)


def is_policy_admin(cluster: ClusterPolicy, *, username: str, groups: tuple[str, ...]) -> bool:
    return username in cluster.policy_admin_users or any(g in cluster.policy_admin_groups for g in groups)


def guard_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The `ollama-guard.io/*` subset of an annotation map."""
    return {k: v for k, v in (annotations or {}).items() if k.startswith(PREFIX)}
