"""The live dashboard. Nothing here is imported by the headless core; `lvstop.cli` imports app lazily."""
