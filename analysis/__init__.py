"""analysis/: understand a run directory (summaries, self-check, and later curves and reports)."""
