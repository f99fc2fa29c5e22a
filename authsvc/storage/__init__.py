"""Persistence: SQLAlchemy Core tables, the engine for SQLite or PostgreSQL, and the stores."""
