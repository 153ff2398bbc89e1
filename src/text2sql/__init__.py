"""Fine-tune small language models to translate questions into SQL.

The package holds the pure core (schema parsing and linking, prompt building, SQL
extraction, result comparison, difficulty rating) and the heavier training and
generation code; the DVC stages in ``stages/`` are thin wrappers around it.
"""

__version__ = "0.1.0"
