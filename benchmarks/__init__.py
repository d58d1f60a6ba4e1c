"""Benchmarks of ollama-guard: snapshots, the floor server, the wrk load generator and the harness.

Run from the repository root: `.venv/bin/python -m benchmarks.run` (see `benchmarks/README.md`).
"""
