"""Leaf utilities shared by every layer: atomic files, URIs, tokenizer copies, distributed helpers,
console quieting, lazy references. Imports nothing from the rest of ``orchestrator``."""
