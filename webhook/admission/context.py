"""The guard's decision context, and what a namespace's enforcement mode makes of violations.

`Guard` bundles what every decision reads (configuration, catalog, the ledger that owns the
cluster view, the workload template store) plus two callbacks for the edges (snapshot binding,
audit-mode records). `enforce` turns violations into a denial, warnings or an audit record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from webhook.admission import review as rv
from webhook.admission.review import AdmissionResponse
from webhook.core.catalog import Catalog
from webhook.core.evaluation import Violation
from webhook.core.ledger import Ledger
from webhook.core.policy import ClusterPolicy, NamespacePolicy
from webhook.core.templates import TemplateStore
from webhook.core.view import Tenant

ALWAYS_DENIED = frozenset({"namespace-policy", "vram-quantity"})


@dataclass(frozen=True, slots=True)
class Guard:
    """Everything a decision reads: configuration, catalog and the ledger (which owns the view)."""

    cluster: ClusterPolicy
    catalog: Catalog
    ledger: Ledger
    templates: TemplateStore = field(default_factory=TemplateStore)
    #: called after a non-dry-run binding is admitted (snapshot mode binds the pod in its view)
    on_bound: Callable[[Tenant, str], None] = field(default=lambda tenant, node: None)
    #: called with (namespace, rule, message) for each violation allowed by `audit` mode
    on_would_deny: Callable[[str, str, str], None] = field(default=lambda ns, rule, msg: None)


def enforce(ns: NamespacePolicy, violations: Sequence[Violation], guard: Guard, *, subject: str) -> AdmissionResponse:
    """Apply the namespace's enforcement mode to a list of violations.

    `fail` violations deny in `enforce` mode, become kubectl warnings in `warn` mode and an audit
    record in `audit` mode; a malformed namespace policy denies in every mode. `warn`-severity
    violations are advisories: always returned as warnings, never a denial.
    """
    if not violations:  # the common case
        return rv.allowed()
    failures = [v for v in violations if v.severity == "fail"]
    advisories = [v.summary for v in violations if v.severity == "warn"]
    # a broken namespace policy or a VRAM quantity that is not one: no mode can stand in for them
    broken_policy = [v for v in failures if v.rule in ALWAYS_DENIED]
    if not failures:
        return rv.with_warnings(rv.allowed(), advisories)
    if ns.enforcement == "enforce" or broken_policy:
        first = (broken_policy or failures)[0]
        rest = [v for v in failures if v is not first]
        message = f"{subject} denied by ollama-guard: {_sentence(first.message)}"
        if rest:
            message += " Also: " + " ".join(_sentence(v.message) for v in rest[:3])
        denial = rv.denied(message, code=first.code, reason="BadRequest" if first.code == 400 else "Forbidden")
        return rv.with_warnings(denial, advisories)
    if ns.enforcement == "warn":
        return rv.with_warnings(rv.allowed(), [f"would deny: {v.summary}" for v in failures] + advisories)
    for v in failures:
        guard.on_would_deny(ns.namespace, v.rule, v.message)
    record = "; ".join(f"{v.rule}: {v.message}" for v in failures)[:2000]
    return rv.with_audit(rv.allowed(), **{"ollama-guard.io/would-deny": record})


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."
