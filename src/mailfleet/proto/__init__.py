"""Pure protocol code, no I/O: addresses, message composition and parsing."""
