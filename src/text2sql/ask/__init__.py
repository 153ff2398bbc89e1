"""Asking a database from outside the pipeline (``text2sql ask``, ``chat``, ``predict``,
``serve``): the one answer pipeline (:mod:`~text2sql.ask.pipeline`), the databases it asks
(:mod:`~text2sql.ask.database`: a SQLite file or a live PostgreSQL database) and questions
turned into the pipeline's own prompts (:mod:`~text2sql.ask.questions`)."""
