"""affcons_lib."""
