"""Model runtimes, one folder each with its settings model (``config.py``) and its
implementation (``runtime.py``): ``hf`` (transformers), ``llamacpp`` (llama-cpp-python)
and ``openai_http`` (an OpenAI-compatible server). ``local.py`` is what the two local
ones share. The Protocol they implement is :class:`memos.protocols.Runtime`."""
