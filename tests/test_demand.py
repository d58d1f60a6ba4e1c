"""Pod demand composition: settings as Ollama reads them, declared vs estimated, the estimate cache."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.core.catalog import load_catalog
from webhook.core.demand import compute_demand, demand_of
from webhook.core.policy import ClusterPolicy, resolve_namespace_policy
from webhook.core.tenants import DeclarationError, read_pod

CLUSTER = ClusterPolicy()
NS = resolve_namespace_policy(CLUSTER, "team-a", None)
CATALOG = load_catalog()


def ollama(env: dict[str, str] | None = None, annotations: dict[str, str] | None = None, gpus: str = "1") -> Any:
    raw = {
        "metadata": {
            "name": "p",
            "namespace": "team-a",
            "annotations": {"ollama-guard.io/models": "llama3.1:8b", **(annotations or {})},
        },
        "spec": {
            "containers": [
                {
                    "name": "o",
                    "image": "ollama/ollama",
                    "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ]
        },
    }
    return read_pod(raw, gpu_resources=CLUSTER.gpu_resources)


def demand(pod: Any, catalog: Any = CATALOG) -> Any:
    return compute_demand(pod, ns=NS, cluster=CLUSTER, catalog=catalog)


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        pytest.param({}, "context_length", 8192, id="namespace-default-context"),
        pytest.param({"OLLAMA_CONTEXT_LENGTH": "4096"}, "context_length", 4096, id="env-context"),
        pytest.param({"OLLAMA_NUM_PARALLEL": "0"}, "num_parallel", 4, id="auto-parallel-worst-case"),
        pytest.param({"OLLAMA_MAX_LOADED_MODELS": "0"}, "max_loaded_models", 3, id="auto-max-loaded"),
        pytest.param({"OLLAMA_KV_CACHE_TYPE": "q8_0"}, "effective_kv_type", "q8_0", id="kv-type-with-injected-flash"),
        pytest.param(
            {"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "false"},
            "effective_kv_type",
            "f16",
            id="kv-type-needs-flash",
        ),
        pytest.param(
            {"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "1"},
            "effective_kv_type",
            "q8_0",
            id="kv-type-with-flash",
        ),
        pytest.param(
            {"OLLAMA_KV_CACHE_TYPE": "bogus", "OLLAMA_FLASH_ATTENTION": "true"},
            "effective_kv_type",
            "f16",
            id="unknown-kv-type-is-f16",
        ),
        pytest.param({"OLLAMA_GPU_OVERHEAD": "1073741824"}, "gpu_overhead_bytes", 1 << 30, id="gpu-overhead"),
    ],
)
def test_settings_are_read_like_ollama(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(demand(ollama(env)).settings, field) == value


@pytest.mark.parametrize(
    ("value", "flash"),
    [
        pytest.param(None, True, id="absent-is-what-the-webhook-injects"),
        pytest.param("1", True, id="one"),
        pytest.param(" 'true' ", True, id="quoted-and-spaced-like-envconfig-Var"),
        pytest.param("T", True, id="go-parsebool-T"),
        pytest.param("yes", True, id="unparsable-is-true-like-BoolWithDefault"),
        pytest.param("0", False, id="zero"),
        pytest.param("False", False, id="False"),
        pytest.param("f", False, id="f"),
        pytest.param("", False, id="empty-is-unset-so-auto-so-not-certain"),
    ],
)
def test_flash_attention_is_read_like_ollama_envconfig(value: str | None, flash: bool) -> None:
    """envconfig.BoolWithDefault("OLLAMA_FLASH_ATTENTION"): Go's ParseBool, an unparsable value is true,
    an empty one is unset (llama.cpp's `auto`, which the guard cannot vouch for)."""
    env = {} if value is None else {"OLLAMA_FLASH_ATTENTION": value}
    assert demand(ollama(env)).settings.flash_attention is flash


def test_flash_attention_counts_only_when_every_ollama_container_has_it() -> None:
    containers = [
        {"name": f"o{i}", "image": "ollama/ollama", "env": env, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        for i, env in enumerate(([], [{"name": "OLLAMA_FLASH_ATTENTION", "value": "0"}]))
    ]
    raw = {
        "metadata": {"name": "p", "namespace": "team-a", "annotations": {"ollama-guard.io/models": "llama3.1:8b"}},
        "spec": {"containers": containers},
    }
    assert demand(read_pod(raw, gpu_resources=CLUSTER.gpu_resources)).settings.flash_attention is False


def test_flash_attention_from_valuefrom_is_off_with_a_note() -> None:
    raw = {
        "metadata": {"name": "p", "namespace": "team-a", "annotations": {"ollama-guard.io/models": "llama3.1:8b"}},
        "spec": {"containers": [{
            "name": "o", "image": "ollama/ollama", "resources": {"limits": {"nvidia.com/gpu": "1"}},
            "env": [{"name": "OLLAMA_FLASH_ATTENTION", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
        }]},
    }
    got = demand(read_pod(raw, gpu_resources=CLUSTER.gpu_resources))
    assert got.settings.flash_attention is False
    assert any("OLLAMA_FLASH_ATTENTION comes from valueFrom" in note for note in got.notes)


def test_without_the_injection_an_absent_setting_is_off() -> None:
    """A policy that does not inject OLLAMA_FLASH_ATTENTION cannot count on it (nor, from the same
    cache, hand out the figure of a namespace that does)."""
    cluster = ClusterPolicy(flash_attention=False)
    ns = resolve_namespace_policy(cluster, "team-a", None)
    off = compute_demand(ollama(), ns=ns, cluster=cluster, catalog=CATALOG)
    assert off.settings.flash_attention is False and ns.flash_attention is False
    assert off.demand_mib > demand(ollama()).demand_mib


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        pytest.param({"OLLAMA_CONTEXT_LENGTH": "8k"}, "OLLAMA_CONTEXT_LENGTH", id="context-suffix"),
        pytest.param({"OLLAMA_GPU_OVERHEAD": "-5"}, "OLLAMA_GPU_OVERHEAD", id="negative-overhead"),
    ],
)
def test_bad_env_values_are_declaration_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(DeclarationError, match=needle):
        demand(ollama(env))


def test_declared_vram_cannot_under_declare_a_known_model() -> None:
    low = demand(ollama(annotations={"ollama-guard.io/vram": "1Gi"}))
    high = demand(ollama(annotations={"ollama-guard.io/vram": "40Gi"}))
    assert low.source == high.source == "max(declared, estimate)"
    assert low.demand_mib == demand(ollama()).demand_mib and high.demand_mib == 40 * 1024


def test_the_estimate_cache_is_keyed_by_everything_that_changes_it() -> None:
    first, again = demand(ollama()), demand(ollama())
    assert again.estimate is first.estimate  # the same combination is estimated once
    assert demand(ollama({"OLLAMA_CONTEXT_LENGTH": "4096"})).demand_mib < first.demand_mib
    assert demand(ollama(gpus="2")).estimate is not first.estimate
    overlay = CATALOG.with_overlay(
        {
            "models": {
                "llama3.1:8b": {
                    "size": "9.8GB",
                    "layers": 32,
                    "kv_heads": 8,
                    "head_dim": 128,
                    "context_length": 131072,
                    "embedding_length": 4096,
                    "heads": 32,
                    "vocab_size": 128256,
                    "architecture": "llama",
                    "quantization": "Q8_0",
                }
            }
        }
    )
    assert demand(ollama(), overlay).demand_mib > first.demand_mib  # another catalog is not served from the cache


_ENV_VALUES = {
    "OLLAMA_CONTEXT_LENGTH": st.sampled_from(["0", "2048", "4096", "32768"]),
    "OLLAMA_NUM_PARALLEL": st.sampled_from(["0", "1", "2", "8"]),
    "OLLAMA_MAX_LOADED_MODELS": st.sampled_from(["0", "1", "2"]),
    "OLLAMA_KV_CACHE_TYPE": st.sampled_from(["f16", "q8_0", "q4_0", "Q8_0 ", "bogus"]),
}
_WIDTH = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional=_ENV_VALUES), min_size=1, max_size=3))
def test_several_ollama_containers_take_the_largest_setting(envs: list[dict[str, str]]) -> None:
    """Every Ollama container may load the models: the largest value of each setting (and the
    widest KV cache type) across them is what the estimate must assume."""
    pod = read_pod(
        {
            "metadata": {"name": "p", "namespace": "team-a", "annotations": {"ollama-guard.io/models": "llama3.1:8b"}},
            "spec": {
                "containers": [
                    {
                        "name": f"o{i}",
                        "image": "ollama/ollama",
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                    for i, env in enumerate(envs)
                ]
            },
        },
        gpu_resources=CLUSTER.gpu_resources,
    )
    got = demand(pod).settings

    def value(env: dict[str, str], name: str, default: int, auto: int) -> int:
        text = env.get(name)
        return default if text is None else auto if text == "0" else int(text)

    assert got.context_length == max(
        value(e, "OLLAMA_CONTEXT_LENGTH", NS.context_length, NS.context_length) for e in envs
    )
    assert got.num_parallel == max(value(e, "OLLAMA_NUM_PARALLEL", NS.num_parallel, 4) for e in envs)
    assert got.max_loaded_models == max(value(e, "OLLAMA_MAX_LOADED_MODELS", NS.max_loaded_models, 3) for e in envs)
    kinds = [e.get("OLLAMA_KV_CACHE_TYPE", "f16").strip().lower() for e in envs]
    assert got.kv_cache_type == max((k if k in _WIDTH else "f16" for k in kinds), key=_WIDTH.__getitem__)


def test_the_demand_cache_serves_identical_pods_and_only_them() -> None:
    first = demand(ollama())
    assert demand(ollama()) is first  # replicas of one workload: computed once
    variants = {
        "context-env": ollama({"OLLAMA_CONTEXT_LENGTH": "4096"}),
        "parallel-env": ollama({"OLLAMA_NUM_PARALLEL": "2"}),
        "max-loaded-env": ollama(
            {"OLLAMA_MAX_LOADED_MODELS": "2"}, {"ollama-guard.io/models": "llama3.1:8b,qwen2.5:7b"}
        ),
        "kv-cache": ollama({"OLLAMA_KV_CACHE_TYPE": "q4_0", "OLLAMA_FLASH_ATTENTION": "1"}),
        "overhead": ollama({"OLLAMA_GPU_OVERHEAD": str(4 << 30)}),
        "flash-off": ollama({"OLLAMA_FLASH_ATTENTION": "0"}),
        "models": ollama(annotations={"ollama-guard.io/models": "qwen2.5:14b"}),
        "vram": ollama(annotations={"ollama-guard.io/vram": "40Gi"}),
        "context-annotation": ollama(annotations={"ollama-guard.io/context-length": "32768"}),
        "gpus": ollama(gpus="2"),
    }
    for name, pod in variants.items():
        got = demand(pod)
        assert got == demand_of(pod, ns=NS, cluster=CLUSTER, catalog=CATALOG), name
        assert got != first, name  # its own entry, not the first pod's
    capped = resolve_namespace_policy(CLUSTER, "team-a", {"ollama-guard.io/context-length": "4096"})
    assert compute_demand(ollama(), ns=capped, cluster=CLUSTER, catalog=CATALOG).demand_mib < first.demand_mib
    stricter = ClusterPolicy(safety_margin=0.5)
    assert compute_demand(ollama(), ns=NS, cluster=stricter, catalog=CATALOG).demand_mib > first.demand_mib
    dearer = ClusterPolicy(runner_overhead_mib=1000)
    assert compute_demand(ollama(), ns=NS, cluster=dearer, catalog=CATALOG).demand_mib > first.demand_mib


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({}, optional=_ENV_VALUES),
    st.sampled_from(["llama3.1:8b", "qwen2.5:14b", "llama3.1:8b,qwen2.5:7b", "mystery:1b"]),
    st.sampled_from([None, "1Gi", "40Gi"]),
    st.sampled_from(["1", "2"]),
)
def test_a_cached_demand_equals_a_fresh_computation(
    env: dict[str, str], models: str, vram: str | None, gpus: str
) -> None:
    annotations = {"ollama-guard.io/models": models, **({"ollama-guard.io/vram": vram} if vram else {})}
    pod = ollama(env, annotations, gpus=gpus)
    try:
        fresh = demand_of(pod, ns=NS, cluster=CLUSTER, catalog=CATALOG)
    except DeclarationError as exc:
        with pytest.raises(DeclarationError, match=re.escape(str(exc))):
            demand(pod)
        return
    assert demand(pod) == fresh
    assert demand(pod) == fresh  # and again, now from the cache
