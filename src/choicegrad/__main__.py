"""`python -m choicegrad` runs the command-line interface, as the `choicegrad` command does."""

from choicegrad.cli import main

main()
