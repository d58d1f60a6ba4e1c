"""A view known to be stale, and the words of what it may not decide (issue 20).

The live source measures, per kind, whether its list/watch is current; it hands the result to
the core as a `Staleness` value on the published `ClusterView` (the core reads no clock). A
decision that depends on an object the view does not hold (a pod pinned to a node the view does
not know, a binding to such a node) is not "allowed because unknown" while the view is stale for
that kind: it is denied with `catching_up`, which says the guard is catching up and the request
can be retried. A snapshot is never stale. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Staleness:
    """The kinds a published view may be missing changes of, and since when."""

    #: kinds whose list/watch is broken or catching up after a break, or not listed yet
    kinds: tuple[str, ...]
    #: when the earliest of them broke (UTC, RFC 3339); "" when none broke (first lists pending)
    since: str = ""

    def covers(self, kind: str) -> bool:
        return kind in self.kinds


def catching_up(stale: Staleness, *, what: str) -> str:
    """The denial for `what` ("pod ns/name is pinned to node N", "binding ... to node N"): the node
    is absent from a stale view."""
    kinds = ", ".join(stale.kinds)
    why = (
        f"its watch of {kinds} has been interrupted since {stale.since}"
        if stale.since
        else f"it has not finished listing {kinds}"
    )
    return (
        f"{what}, which is not in the guard's view of the cluster; that view is catching up with the "
        f"API server ({why}), so the guard cannot check that node's VRAM yet. This is temporary: "
        "retry in a few seconds (controllers and the scheduler retry on their own)"
    )


def catching_up_short(node: str) -> str:
    """One line for a kubectl warning (≤ 120 characters)."""
    return f"node {node[:40]} not in the guard's view yet (catching up with the API server); retry shortly"
