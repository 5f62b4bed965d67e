"""The ``mailfleet`` command: one module per command group."""
