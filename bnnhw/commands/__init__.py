"""Subcommands of the bnnhw CLI, one module each."""
