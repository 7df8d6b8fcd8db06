"""Hybrid search over a cube: dense and lexical candidates fused (``fusion``), expanded
by neighbouring turns (``turns``) and the graph, with the query's time expressions read by
:mod:`memos.extract.timeparse`. :class:`~memos.plaintext.retrieval.retriever.Retriever` is
the entry."""
