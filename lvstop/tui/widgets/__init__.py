"""Widgets of the dashboard: the live table, span lines, and the per-director view."""
