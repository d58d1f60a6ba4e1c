"""Who is subject (design §3) and what a pod declares (design §4): recognition and discovery."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.core.declarations import discover_models, parse_models, read_declaration
from webhook.core.tenants import DeclarationError, is_ollama_image, read_pod

GPU = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
HELM_SCRIPT = (
    "while ! /bin/ollama ps > /dev/null 2>&1; do\n  sleep 5\ndone\n"
    "/bin/ollama pull llama3.1:8b\n/bin/ollama pull qwen2.5:7b\n"
)


def pod(
    *,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers or [{"name": "c", "image": "busybox"}]}
    if init:
        spec["initContainers"] = init
    return {
        "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}, "labels": labels or {}},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("ollama/ollama", True, id="bare"),
        pytest.param("ollama/ollama:0.6.8", True, id="tag"),
        pytest.param("docker.io/ollama/ollama:latest", True, id="registry"),
        pytest.param("registry.local:5000/mirror/ollama/ollama@sha256:abc", True, id="port-and-digest"),
        pytest.param("OLLAMA/OLLAMA:rocm", True, id="case"),
        pytest.param("ollama/ollama-webui", False, id="other-repo"),
        pytest.param("myorg/ollama", False, id="other-org"),
        pytest.param("ghcr.io/open-webui/open-webui:main", False, id="webui"),
        pytest.param("registry.local:5000/ollama", False, id="port-only"),
    ],
)
def test_ollama_image_recognition(image: str, expected: bool) -> None:
    assert is_ollama_image(image) is expected


@pytest.mark.parametrize(
    ("raw", "ollama", "gpus"),
    [
        pytest.param(pod(containers=[{"name": "o", "image": "ollama/ollama"}]), True, 0, id="image"),
        pytest.param(pod(labels={"app.kubernetes.io/name": "ollama"}), True, 0, id="label"),
        pytest.param(pod(annotations={"ollama-guard.io/models": "llama3.1"}), True, 0, id="annotation"),
        pytest.param(
            pod(containers=[{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]),
            False,
            2,
            id="gpu-tenant",
        ),
        pytest.param(
            pod(containers=[{"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu.shared": 1}}}]),
            False,
            1,
            id="renamed-resource-request-only",
        ),
        pytest.param(
            pod(
                containers=[
                    {"name": "a", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                    {"name": "b", "image": "y", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                ],
                init=[{"name": "i", "image": "z", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            ),
            False,
            2,
            id="sum-of-app-containers-vs-init-max",
        ),
        pytest.param(
            pod(containers=[{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}]),
            False,
            0,
            id="mig-is-not-time-sliced",
        ),
    ],
)
def test_read_pod_recognises_tenants(raw: dict[str, Any], ollama: bool, gpus: int) -> None:
    facts = read_pod(raw, gpu_resources=GPU)
    assert facts.is_ollama is ollama
    assert facts.gpus == gpus


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("1 ", id="space"),
        pytest.param("9e999", id="absurd"),
        pytest.param("lots", id="word"),
    ],
)
def test_bad_gpu_quantity_is_a_declaration_error(value: str) -> None:
    raw = pod(containers=[{"name": "gpu", "image": "x", "resources": {"limits": {"nvidia.com/gpu": value}}}])
    with pytest.raises(DeclarationError, match="container 'gpu'"):
        read_pod(raw, gpu_resources=GPU)


@pytest.mark.parametrize(
    ("containers", "init", "expected"),
    [
        pytest.param(
            [
                {
                    "name": "o",
                    "image": "ollama/ollama",
                    "lifecycle": {"postStart": {"exec": {"command": ["/bin/sh", "-c", HELM_SCRIPT]}}},
                }
            ],
            None,
            ("llama3.1:8b", "qwen2.5:7b"),
            id="helm-poststart-script",
        ),
        pytest.param(
            [
                {
                    "name": "o",
                    "image": "ollama/ollama",
                    "lifecycle": {
                        "postStart": {
                            "exec": {
                                "command": ["/bin/sh", "-c", 'echo "llama3.2:3b mistral" | xargs -n1 /bin/ollama pull']
                            }
                        }
                    },
                }
            ],
            None,
            ("llama3.2:3b", "mistral"),
            id="helm-xargs-form",
        ),
        pytest.param(
            [{"name": "o", "image": "ollama/ollama", "command": ["/bin/ollama"], "args": ["run", "gemma2:9b"]}],
            None,
            ("gemma2:9b",),
            id="args-run",
        ),
        pytest.param(
            [{"name": "o", "image": "ollama/ollama"}],
            [{"name": "pull", "image": "ollama/ollama", "command": ["ollama", "pull", "phi4:14b"]}],
            ("phi4:14b",),
            id="init-container",
        ),
        pytest.param(
            [
                {
                    "name": "o",
                    "image": "ollama/ollama",
                    "env": [{"name": "MODEL", "value": "qwen3:8b"}],
                    "args": ["sh", "-c", "ollama serve & sleep 3; ollama pull ${MODEL}"],
                }
            ],
            None,
            ("qwen3:8b",),
            id="env-expansion",
        ),
        pytest.param(
            [
                {
                    "name": "o",
                    "image": "ollama/ollama",
                    "args": [
                        "sh",
                        "-c",
                        "printf 'FROM llama3.1:8b\\nPARAMETER num_ctx 4096' > /tmp/M && ollama create mine -f /tmp/M",
                    ],
                }
            ],
            None,
            ("llama3.1:8b",),
            id="create-from",
        ),
        pytest.param([{"name": "o", "image": "ollama/ollama", "args": ["serve"]}], None, (), id="no-models"),
        pytest.param(
            [{"name": "o", "image": "ollama/ollama", "args": ["sh", "-c", "ollama pull $UNSET"]}],
            None,
            (),
            id="unresolved-variable-ignored",
        ),
    ],
)
def test_discovery(
    containers: list[dict[str, Any]], init: list[dict[str, Any]] | None, expected: tuple[str, ...]
) -> None:
    facts = read_pod(pod(containers=containers, init=init), gpu_resources=GPU)
    assert discover_models(facts.containers) == expected
    decl = read_declaration(facts)
    assert decl.models == expected
    assert decl.source == ("discovered" if expected else "none")


def test_annotation_is_authoritative_over_discovery() -> None:
    raw = pod(
        containers=[{"name": "o", "image": "ollama/ollama", "args": ["run", "gemma2:9b"]}],
        annotations={"ollama-guard.io/models": " llama3.1:8b , qwen2.5:14b-instruct-q8_0,llama3.1:8b "},
    )
    decl = read_declaration(read_pod(raw, gpu_resources=GPU))
    assert decl.models == ("llama3.1:8b", "qwen2.5:14b-instruct-q8_0")
    assert decl.source == "annotation"


@pytest.mark.parametrize(
    ("annotations", "needle"),
    [
        pytest.param({"ollama-guard.io/models": " , "}, "names no model", id="empty-models"),
        pytest.param({"ollama-guard.io/models": "llama 3"}, "not an Ollama model reference", id="space-in-ref"),
        pytest.param({"ollama-guard.io/models": "###"}, "not an Ollama model reference", id="junk"),
        pytest.param({"ollama-guard.io/vram": "-1Gi"}, "negative", id="negative-vram"),
        pytest.param({"ollama-guard.io/vram": "9e999"}, "ollama-guard.io/vram", id="absurd-vram"),
        pytest.param({"ollama-guard.io/vram": "1 Gi"}, "whitespace", id="space-vram"),
        pytest.param({"ollama-guard.io/vram": "0"}, "zero", id="zero-vram"),
        pytest.param({"ollama-guard.io/context-length": "abc"}, "whole number", id="bad-context"),
        pytest.param({"ollama-guard.io/context-length": "0"}, "whole number", id="zero-context"),
    ],
)
def test_bad_pod_annotations_name_the_annotation(annotations: dict[str, str], needle: str) -> None:
    with pytest.raises(DeclarationError) as err:
        read_declaration(read_pod(pod(annotations=annotations), gpu_resources=GPU))
    assert needle in str(err.value)
    assert "ollama-guard.io/" in str(err.value)


def test_vram_and_context_annotations() -> None:
    decl = read_declaration(
        read_pod(
            pod(annotations={"ollama-guard.io/vram": "20000Mi", "ollama-guard.io/context-length": "32768"}),
            gpu_resources=GPU,
        )
    )
    assert decl.vram_mib == 20000
    assert decl.context_length == 32768


@given(st.text(max_size=300))
def test_models_parser_never_crashes_on_any_text(text: str) -> None:
    try:
        refs = parse_models(text)
    except DeclarationError as exc:
        assert "ollama-guard.io/models" in str(exc)
    else:
        assert refs and all(r == r.strip() and r for r in refs)


@given(st.lists(st.text(max_size=80), max_size=5))
def test_discovery_never_crashes_on_any_command(command: list[str]) -> None:
    facts = read_pod(pod(containers=[{"name": "o", "image": "ollama/ollama", "command": command}]), gpu_resources=GPU)
    found = discover_models(facts.containers)
    assert all(" " not in m for m in found)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(pod(), False, id="cpu-pod"),
        pytest.param(pod(containers=[{"name": "o", "image": "docker.io/ollama/ollama:0.6.8"}]), True, id="ollama"),
        pytest.param(pod(labels={"app.kubernetes.io/name": "ollama"}), True, id="label"),
        pytest.param(pod(annotations={"ollama-guard.io/models": "x"}), True, id="annotation"),
        pytest.param(
            pod(containers=[{"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu": 1}}}]),
            True,
            id="gpu-request",
        ),
        pytest.param(
            pod(init=[{"name": "i", "image": "x", "resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}}]),
            True,
            id="mig-init",
        ),
        pytest.param({"metadata": {}, "spec": {"containers": ["junk"]}}, True, id="malformed-goes-to-full-reader"),
    ],
)
def test_prefilter_only_drops_pods_that_are_not_subjects(raw: dict[str, Any], expected: bool) -> None:
    from webhook.core.tenants import could_be_subject

    assert could_be_subject(raw, gpu_resources=GPU) is expected
    if not expected:
        facts = read_pod(raw, gpu_resources=GPU)
        assert not facts.is_ollama and not facts.is_gpu_tenant and not facts.uses_mig


@given(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.just("c"), "image": st.sampled_from(["a", "ollama/ollama"])},
            optional={
                "resources": st.fixed_dictionaries(
                    {}, optional={"limits": st.dictionaries(st.sampled_from(["cpu", "nvidia.com/gpu"]), st.just("1"))}
                )
            },
        ),
        max_size=3,
    )
)
def test_prefilter_never_drops_a_subject(containers: list[dict[str, Any]]) -> None:
    from webhook.core.tenants import could_be_subject

    raw = pod(containers=containers or [{"name": "c", "image": "busybox"}])
    facts = read_pod(raw, gpu_resources=GPU)
    if facts.is_ollama or facts.is_gpu_tenant:
        assert could_be_subject(raw, gpu_resources=GPU)


@pytest.mark.parametrize(
    ("value", "gpus"),
    [
        pytest.param("1", 1, id="one"),
        pytest.param("64", 64, id="max"),
        pytest.param("0640", None, id="padded-640"),
        pytest.param("65", None, id="over-max"),
        pytest.param(2, 2, id="int"),
        pytest.param("2000m", 2, id="milli"),
    ],
)
def test_gpu_counts(value: object, gpus: int | None) -> None:
    raw = pod(containers=[{"name": "g", "image": "x", "resources": {"limits": {"nvidia.com/gpu": value}}}])
    if gpus is None:
        with pytest.raises(DeclarationError):
            read_pod(raw, gpu_resources=GPU)
    else:
        assert read_pod(raw, gpu_resources=GPU).gpus == gpus
