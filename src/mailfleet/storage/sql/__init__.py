"""The metadata store over SQLAlchemy Core: one schema and one set of queries
for SQLite (embedded) and PostgreSQL (distributed). Dialect differences stay in
the engine setup (embedded/sqlite.py, distributed/postgres.py)."""
