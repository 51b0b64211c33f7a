"""Generated text: one small backend interface (prompts in, texts out) with a cache on disk."""
