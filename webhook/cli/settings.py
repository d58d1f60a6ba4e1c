"""The guard's own configuration: pydantic-settings from `OLLAMA_GUARD_*` environment variables
and an optional YAML policy file (design §9). Read once at startup and passed down.

Precedence: explicit arguments > environment > policy file > defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhook.core.policy import ClusterPolicy, PolicyDefaults
from webhook.core.quantity import QuantityError, parse_mib

MAX_BODY_BYTES = 3 << 20


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the setting or file."""


class Settings(BaseSettings, PolicyDefaults):
    """`PolicyDefaults` plus what only configuration has (quantities as text, paths, server)."""

    model_config = SettingsConfigDict(env_prefix="OLLAMA_GUARD_", frozen=True, extra="forbid")

    exempt_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease")
    guard_namespace: str = "ollama-guard-system"
    #: live mode: publish each GPU node's VRAM as `ollama-guard.io/vram-mib` (design §14), one
    #: replica at a time through the Lease `ollama-guard-advertiser` in `guard_namespace`
    advertise_vram: bool = True
    #: live mode: `/readyz` is 503 while a watched kind has been disconnected from the API server
    #: for longer than this (issue 20); decisions that need what a stale view lacks are denied sooner
    stale_after_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: per pod, on top of its runners (design §5.1: 0, the Ollama server holds no CUDA context)
    cuda_context_overhead: str = "0Mi"
    #: per loaded model: its runner process's CUDA context + cuBLAS (design §5.1: 589 MiB measured)
    runner_overhead: str = "589Mi"
    default_tenant_vram: str | None = None
    catalog_overlay: Path | None = None
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
    log_level: str = "INFO"
    #: `serve`: the heap (the cluster view) on transparent huge pages, Linux only (webhook/http/hugepages.py)
    huge_pages: bool = True

    def cluster_policy(self) -> ClusterPolicy:
        try:
            overhead = parse_mib(self.cuda_context_overhead)
            runner = parse_mib(self.runner_overhead)
            default = parse_mib(self.default_tenant_vram) if self.default_tenant_vram else None
        except QuantityError as exc:
            raise ConfigError(f"cuda_context_overhead/runner_overhead/default_tenant_vram: {exc}") from None
        shared = {name: getattr(self, name) for name in PolicyDefaults.model_fields}
        return ClusterPolicy(
            **shared,
            exempt_namespaces=tuple(dict.fromkeys((*self.exempt_namespaces, self.guard_namespace))),
            cuda_context_overhead_mib=overhead,
            runner_overhead_mib=runner,
            default_tenant_vram_mib=default,
        )


def load_settings(policy_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the policy file (if any), the environment and explicit overrides."""
    from_file: dict[str, Any] = {}
    if policy_file is not None:
        try:
            loaded = yaml.safe_load(policy_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"policy file {policy_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"policy file {policy_file}: expected a mapping of settings")
        from_file = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    try:
        env_only = Settings()
        merged = {**from_file, **{k: getattr(env_only, k) for k in env_only.model_fields_set}, **overrides}
        settings = Settings.model_validate(merged)
        settings.cluster_policy()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"setting {where}: {first['msg']}") from None
    return settings
