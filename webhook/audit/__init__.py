"""The dry-run audit (design §12): one evaluation of a whole cluster, and its renderers.

Owns the report values (`model`), the run that judges every tenant and manifest with the same
checks as the webhooks (`run`), the findings and their words (`findings`) and the output formats
(`render_text`: table and Markdown; `render_html`; `render_policy`: JSON and PolicyReports;
`render_openreports`: the same reports in OpenReports); the live page's audit of the view the
webhook holds, with runtime drift, and its JSON (`live`); and the time-slicing plan of a state and
its manifests (`timeslicing`, rendered by `render_timeslicing`).

Pure: a cluster state and manifests in, a frozen report and text out. It builds on
`webhook.core` and `webhook.admission`; it must not import `webhook.state`, `webhook.http`,
`webhook.install` or `webhook.cli` (reading files and the cluster is the CLI's job).
"""
