"""Benchmarks behind `imp bench ...`: each prints a readable table, or one JSON object with --json."""
