"""Model runtimes: transformers, llama-cpp-python and OpenAI-compatible HTTP (see memos.runtime)."""
