"""Hybrid search over a cube: dense and lexical candidates fused (``fusion``), expanded
by neighbouring turns (``turns``) and the graph, with time expressions understood
(``timeparse``). :class:`~memos.plaintext.retrieval.retriever.Retriever` is the entry."""
