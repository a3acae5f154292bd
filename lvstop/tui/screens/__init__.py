"""Modal screens: help, weight entry and the confirmation of weight edits."""
