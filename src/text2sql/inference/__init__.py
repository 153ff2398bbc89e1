"""Generating SQL: transformers (hf), llama.cpp on GGUF files, the predict loop of the infer
stage and the CLI, and self-consistency voting by execution."""
