"""Helpers to run throwaway instances (PostgreSQL, a whole RuPost node) for tests and benchmarks."""
