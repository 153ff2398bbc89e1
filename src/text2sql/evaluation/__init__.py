"""Scoring SQL by executing it: result comparison (Spider's semantics), difficulty, execution
accuracy and its breakdowns, and the report that compares runs. Torch-free
(tests/test_layout.py)."""
