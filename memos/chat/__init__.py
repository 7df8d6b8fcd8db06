"""The memory-augmented forward pass: ``MemOS.chat``.

1. retrieve plaintext memories for the message from the cubes the user may read
   (:func:`~memos.chat.prompt.chat_memories`);
2. assemble the prompt within the model's context budget — system prompt with the
   memories, recent turns of the session, the message (:mod:`memos.chat.prompt`);
3. generate on the runtime (streaming or not; the loaded runtimes are
   :mod:`memos.chat.runtimes`);
4. write back: the user's turn and the answer as episodes of the session (the answer
   without extraction: a model's words are not facts about the user) and the LLM
   reader's decisions when ``extractor = "llm"``. (Access statistics of the retrieved
   memories are kept by ``search`` itself.)

Activation (KV prefix) and parametric (LoRA) memory plug into steps 2 and 3. The service
is :class:`~memos.chat.pipeline.Chat`; what it returns is in :mod:`memos.chat.results`.
"""

from memos.chat.pipeline import Chat
from memos.chat.prompt import Assembled, assemble, chat_memories, system_text, tells_nothing
from memos.chat.results import ChatResult, ChatStream, ChatTimings, UsedMemory
from memos.chat.runtimes import Runtimes

__all__ = [
    "Assembled",
    "Chat",
    "ChatResult",
    "ChatStream",
    "ChatTimings",
    "Runtimes",
    "UsedMemory",
    "assemble",
    "chat_memories",
    "system_text",
    "tells_nothing",
]
