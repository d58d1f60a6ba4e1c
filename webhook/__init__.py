"""ollama-guard: admission webhook and scheduling guard for time-sliced GPU nodes running Ollama.

The package splits into a pure decision core (no I/O, no clock, no environment: testable with
plain dicts) and thin edges that each own one library (server: FastAPI/uvicorn, cluster:
kubernetes, certs: cryptography, config: pydantic-settings, cli: typer).
"""

__version__ = "0.1.0"
