"""CLI commands: each parses nothing, prints its result and returns an exit code."""
