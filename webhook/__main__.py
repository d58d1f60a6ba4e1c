"""`python -m webhook` runs the `ollama-guard` command line."""

from webhook.cli.main import main

main()
