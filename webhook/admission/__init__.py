"""The admission webhooks as pure functions: AdmissionRequest + decision context -> AdmissionResponse.

Owns the `admission.k8s.io/v1` wire types and response constructors (`review`), RFC 6902 JSON
Patch builders (`patches`), the mutating webhook (`mutation`), the validating webhook's dispatch
(`validation`), workloads and `scale` (`workloads`) and the decision context with what a
namespace's enforcement mode makes of violations (`context`).

Composition of `webhook.core`; still pure: no HTTP, no Kubernetes API, no files. It may import
`webhook.core` only.
"""
