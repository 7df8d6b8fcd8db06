"""Policies of the memory scheduler (installed as ``memos.policies``).

:mod:`memos.policies.base` says what a policy is (a pure decision over a
:class:`~memos.policies.base.CubeView`, returning actions as data); each built-in lives
in its own package — ``heat``, ``ttl``, ``dedup``, ``decay``, ``summaries``, ``capacity``, ``erasure``,
``activation``, ``parametric`` — registered under the
entry-point group ``memos.policies`` like a third party's. The kernel runs them:
:mod:`memos.scheduler.policies`. A policy imports only kernel types (the import
contracts in pyproject.toml), never a service.
"""
