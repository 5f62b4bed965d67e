"""Accounts, hosted domains, passwords (Argon2id) and sessions (opaque tokens
stored hashed)."""
