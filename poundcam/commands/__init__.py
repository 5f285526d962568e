"""Command groups of the `poundcam` CLI, one module each."""
