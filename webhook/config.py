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

from webhook.policy import ClusterPolicy, Enforcement
from webhook.quantity import QuantityError, parse_mib

MAX_BODY_BYTES = 3 << 20


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the setting or file."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLLAMA_GUARD_", frozen=True, extra="forbid")

    # cluster policy defaults (design §9)
    enforcement: Enforcement = "enforce"
    max_loaded_models: int = Field(default=1, ge=1, le=64)
    context_length: int = Field(default=8192, ge=256, le=1 << 21)
    num_parallel: int = Field(default=1, ge=1, le=256)
    allowed_models: tuple[str, ...] = ("*",)
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
    exempt_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease")
    guard_namespace: str = "ollama-guard-system"
    policy_admin_groups: tuple[str, ...] = ("system:masters",)
    policy_admin_users: tuple[str, ...] = ()
    cuda_context_overhead: str = "512Mi"
    safety_margin: float = Field(default=0.10, ge=0.0, le=10.0)
    default_tenant_vram: str | None = None
    ollama_requires_gpu: bool = True
    reservation_ttl_seconds: float = Field(default=60.0, gt=0)
    catalog_overlay: Path | None = None
    # server
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
    log_level: str = "INFO"

    def cluster_policy(self) -> ClusterPolicy:
        try:
            overhead = parse_mib(self.cuda_context_overhead)
            default = parse_mib(self.default_tenant_vram) if self.default_tenant_vram else None
        except QuantityError as exc:
            raise ConfigError(f"cuda_context_overhead/default_tenant_vram: {exc}") from None
        exempt = tuple(dict.fromkeys((*self.exempt_namespaces, self.guard_namespace)))
        return ClusterPolicy(
            enforcement=self.enforcement,
            max_loaded_models=self.max_loaded_models,
            context_length=self.context_length,
            num_parallel=self.num_parallel,
            allowed_models=self.allowed_models,
            gpu_resources=self.gpu_resources,
            exempt_namespaces=exempt,
            policy_admin_groups=self.policy_admin_groups,
            policy_admin_users=self.policy_admin_users,
            cuda_context_overhead_mib=overhead,
            safety_margin=self.safety_margin,
            default_tenant_vram_mib=default,
            ollama_requires_gpu=self.ollama_requires_gpu,
            reservation_ttl_seconds=self.reservation_ttl_seconds,
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
