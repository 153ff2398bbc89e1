"""The models themselves: the built-in tiny Qwen2 (random weights, offline), LoRA on a base
(Unsloth or PEFT, 4-bit or not), and the precision each device computes in."""
