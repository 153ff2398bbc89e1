"""Exporting a trained adapter: the float32 merge, GGUF conversion and quantization, the
fidelity check, the Ollama Modelfile and the export card."""
