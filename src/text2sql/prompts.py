"""ChatML prompts: a system instruction, the (linked) schema and the question."""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You translate questions into SQLite queries. Answer with a single SQL query "
    "that uses only the tables given."
)


def build_user_message(question: str, schema_text: str, evidence: str | None = None) -> str:
    """The user turn: schema first, then optional evidence (BIRD), then the question."""
    parts = [f"Schema:\n{schema_text}"]
    if evidence:
        parts.append(f"Evidence: {evidence}")
    parts.append(f"Question: {question}")
    return "\n\n".join(parts)


def build_prompt_messages(
    question: str, schema_text: str, evidence: str | None = None
) -> list[dict[str, str]]:
    """The conversation up to, not including, the assistant's answer."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": build_user_message(question, schema_text, evidence)},
    ]
