"""An Ollama ``Modelfile`` for an exported GGUF: template, stop tokens, system prompt.

Ollama writes chat templates in Go's template language, not Jinja. The model's own Jinja
template is translated by rendering it: each role's block is found by rendering a
conversation with placeholder contents and cutting around them, so the Go template puts
exactly the same text around each message (for ChatML: ``<|im_start|>user\\n`` before,
``<|im_end|>\\n`` after). A template whose blocks change with what comes later cannot be
translated this way and is refused, naming what differed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Render = Callable[[list[dict[str, str]], bool], str]  # (messages, add_generation_prompt) -> text
PLACEHOLDER = "\x00{}\x00"


@dataclass(frozen=True)
class RoleBlocks:
    """The text a chat template writes around each message, and to start the answer."""

    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation_prompt: str


def role_blocks(render: Render) -> RoleBlocks:
    """Cut the template's rendering of a system/user/assistant conversation into blocks."""
    turns = [("system", PLACEHOLDER.format("S")), ("user", PLACEHOLDER.format("U")),
             ("assistant", PLACEHOLDER.format("A"))]
    blocks: dict[str, tuple[str, str]] = {}
    previous = ""
    for k, (role, content) in enumerate(turns):
        text = render([{"role": r, "content": c} for r, c in turns[:k + 1]], False)
        if not text.startswith(previous):
            raise ValueError(f"the chat template writes the turns before a {role} message "
                             "differently once it follows; it cannot be written as an Ollama "
                             "template")
        block = text[len(previous):]
        if block.count(content) != 1:
            raise ValueError(f"the chat template does not write a {role} message's content "
                             "once, as it is")
        before, after = block.split(content)
        blocks[role] = (before, after)
        previous = text
    two = [{"role": r, "content": c} for r, c in turns[:2]]
    without, with_prompt = render(two, False), render(two, True)
    if not with_prompt.startswith(without):
        raise ValueError("the chat template's generation prompt changes the text before it")
    return RoleBlocks(system=blocks["system"], user=blocks["user"],
                      assistant=blocks["assistant"],
                      generation_prompt=with_prompt[len(without):])


def ollama_template(blocks: RoleBlocks) -> str:
    """The Go template Ollama renders a conversation with (system from ``.System``).

    As Ollama's own qwen2.5-coder template does, a conversation that ends with an assistant
    message is continued, not answered anew: that message is left open (no end-of-turn after
    it) and no generation prompt follows. Otherwise the generation prompt comes after the
    last message, as ``apply_chat_template(..., add_generation_prompt=True)`` writes it.
    """
    (sb, sa), (ub, ua), (ab, aa) = blocks.system, blocks.user, blocks.assistant
    return ("{{ if .System }}" + sb + "{{ .System }}" + sa + "{{ end }}"
            "{{ range $i, $_ := .Messages }}"
            "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            '{{ if eq .Role "user" }}' + ub + "{{ .Content }}" + ua
            + '{{ else if eq .Role "assistant" }}' + ab + "{{ .Content }}"
            + "{{ if not $last }}" + aa + "{{ end }}"
            + "{{ end }}"
            + '{{ if and $last (ne .Role "assistant") }}' + blocks.generation_prompt + "{{ end }}"
            + "{{ end }}")


def render_modelfile(gguf_name: str, template: str, stops: Sequence[str], system: str) -> str:
    """The Modelfile: FROM the GGUF beside it, TEMPLATE, each stop, greedy decoding, SYSTEM."""
    for what, text in (("template", template), ("system prompt", system)):
        if '"""' in text:
            raise ValueError(f'the {what} holds """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += ["PARAMETER temperature 0", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n"
