"""Offline reporting over finished runs: the sweep report (table + plots) and the results table in docs/."""
