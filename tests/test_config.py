"""The guard's own configuration: defaults, policy file, environment, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.cli.settings import ConfigError, load_settings


def test_defaults_make_the_design_policy() -> None:
    cluster = load_settings().cluster_policy()
    assert cluster.enforcement == "enforce" and cluster.cuda_context_overhead_mib == 0
    assert cluster.runner_overhead_mib == 589  # design §5.1, per loaded model
    assert cluster.safety_margin == pytest.approx(0.10) and cluster.default_tenant_vram_mib is None
    assert set(cluster.exempt_namespaces) == {"kube-system", "kube-node-lease", "ollama-guard-system"}
    assert cluster.policy_admin_groups == ("system:masters",)


def test_policy_file_then_environment_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "enforcement: warn\ncontext-length: 4096\ncuda_context_overhead: 1Gi\nrunner_overhead: 400Mi\n"
        "default_tenant_vram: 20Gi\npolicy_admin_groups: [platform]\n"
    )
    monkeypatch.setenv("OLLAMA_GUARD_CONTEXT_LENGTH", "16384")
    monkeypatch.setenv("OLLAMA_GUARD_GUARD_NAMESPACE", "gpu-guard")
    settings = load_settings(policy, safety_margin=0.2)
    cluster = settings.cluster_policy()
    assert cluster.enforcement == "warn"  # from the file
    assert cluster.context_length == 16384  # the environment wins over the file
    assert cluster.safety_margin == pytest.approx(0.2)  # explicit argument wins
    assert cluster.cuda_context_overhead_mib == 1024 and cluster.default_tenant_vram_mib == 20480
    assert cluster.runner_overhead_mib == 400
    assert "gpu-guard" in cluster.exempt_namespaces and cluster.policy_admin_groups == ("platform",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("enforcement: strict\n", "enforcement", id="bad-enforcement"),
        pytest.param("context_length: 0\n", "context_length", id="bad-context"),
        pytest.param("cuda_context_overhead: 1 Gi\n", "whitespace", id="bad-quantity"),
        pytest.param("runner_overhead: -5Mi\n", "runner_overhead", id="negative-runner-overhead"),
        pytest.param("no_such_setting: 1\n", "no_such_setting", id="unknown-setting"),
        pytest.param("- a list\n", "mapping", id="not-a-mapping"),
        pytest.param("enforcement: [\n", "policy file", id="bad-yaml"),
    ],
)
def test_bad_policy_files_name_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(policy)


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_GUARD_SAFETY_MARGIN", "lots")
    with pytest.raises(ConfigError, match="safety_margin"):
        load_settings()
