"""The server runs on uvicorn[standard]'s uvloop + httptools and says so (issue 17).

A real `ollama-guard serve` in a subprocess: its `/metrics` names the event loop that answered the
scrape and the HTTP parser uvicorn was given, and its startup line names both. The fallback text
(what an operator reads when the fast loop or parser is missing) is a table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from guard_process import log_of, serving

from webhook.http.metrics import Metrics
from webhook.http.server import ServerStack, server_stack

INFO = re.compile(r'^ollama_guard_server_info\{(?P<labels>[^}]*)\} 1\.0$', re.MULTILINE)


def test_a_served_guard_reports_uvloop_and_httptools_in_metrics_and_at_startup(tmp_path: Path) -> None:
    with serving(tmp_path) as guard, guard.https() as client:
        text = client.get("/metrics").text
    found = INFO.search(text)
    assert found is not None, text[-2000:]
    assert dict(re.findall(r'(\w+)="([^"]*)"', found["labels"])) == {"loop": "uvloop", "http": "httptools"}
    assert "; uvloop + httptools)" in log_of(tmp_path)
    assert "not installed" not in log_of(tmp_path)


def test_the_installed_stack_is_uvloop_and_httptools() -> None:
    assert server_stack() == ServerStack(loop="uvloop", http="httptools")
    assert server_stack().fallback is None


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        pytest.param(
            ServerStack("asyncio", "h11"),
            "uvloop and httptools not installed: serving on asyncio + h11, several times slower per review; "
            "install ollama-guard with its uvicorn[standard] dependency",
            id="both-missing",
        ),
        pytest.param(
            ServerStack("uvloop", "h11"),
            "httptools not installed: serving on uvloop + h11, several times slower per review; "
            "install ollama-guard with its uvicorn[standard] dependency",
            id="parser-missing",
        ),
        pytest.param(
            ServerStack("asyncio", "httptools"),
            "uvloop not installed: serving on asyncio + httptools, several times slower per review; "
            "install ollama-guard with its uvicorn[standard] dependency",
            id="loop-missing",
        ),
    ],
)
def test_the_fallback_says_what_is_missing_and_how_to_get_it(stack: ServerStack, message: str) -> None:
    assert stack.fallback == message


def test_server_info_outside_a_running_loop_says_none() -> None:
    from webhook.core.ledger import Ledger
    from webhook.core.view import ClusterView

    text = Metrics(lambda: Ledger(ClusterView())).render().decode()
    assert 'ollama_guard_server_info{http="unknown",loop="none"} 1.0' in text
