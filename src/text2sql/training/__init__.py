"""Training: supervised fine-tuning (sft) with answer-only loss masking, batching, checkpoints
and curves, its memory estimate, and alignment (DPO/GRPO) with execution rewards and pairs."""
