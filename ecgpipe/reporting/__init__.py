"""Reporting: tables, plots and study aggregation."""
