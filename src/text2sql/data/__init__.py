"""Datasets to prompts: the sources (Spider, BIRD, JSONL, Hugging Face, SParC/CoSQL), schema
linking and value retrieval, the schema-aware ChatML prompts, the prepare stage's core and the
built-in sample data. Torch-free (tests/test_layout.py)."""
