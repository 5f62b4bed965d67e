"""Storage: the interfaces (interfaces.py), their embedded implementations
(embedded/), the SQL metadata store shared by SQLite and PostgreSQL (sql/), and
the factory that picks one by URL (factory.py, the only module importing both)."""
