"""Asking a database from outside the pipeline (``text2sql ask``, ``chat``, ``predict``,
``serve``): questions turned into the pipeline's own prompts, and live PostgreSQL databases."""
