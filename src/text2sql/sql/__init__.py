"""SQL and the databases it runs on, read-only: parsing (sqlglot), extracting a query from a
model's text, dialect translation, the SQLite runner with its guards (time, memory, read-only
authorizer), PostgreSQL's guards, schemas, and the worker pool that bounds untrusted queries.
Torch-free (tests/test_layout.py)."""
