"""`python -m webhook` runs the `ollama-guard` command line."""

from webhook.cli import main

main()
