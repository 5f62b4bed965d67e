"""mailfleet: a Gmail-class email service (SMTP in and out, JSON API, webmail, search)."""

__version__ = "0.1.0"
