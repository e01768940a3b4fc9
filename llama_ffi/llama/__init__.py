"""The llama-cpp-python facade: ``Llama`` and the names that come with it.

``llama.py`` is the class (construction, lifecycle, the public methods); the work lives in
one module per concern, each written against a ``Llama``:

  session.py        ``Session``: prompt handling, prefix reuse and the generation loop over
                    one context and sequence 0 (completions, chats and streams go through it)
  chat.py           ``create_chat_completion`` over ``llama_ffi.chat``'s pipeline
  embed.py          ``create_embedding``, ``embed``, ``rerank``
  aio.py            the ``*_async`` methods (a worker thread per call)
  tokens.py         the token-level API (``eval``, ``sample``, ``generate``, ``scores``)
                    and ``LlamaTokenizer``
  cache.py          prompt caches (``LlamaRAMCache``)
  hub.py            ``Llama.from_pretrained`` and downloads from the Hugging Face hub
  unified.py        ``UnifiedLLM``: typed chat results over a ``Llama``
  vision.py         images and audio: the projector (``mmproj=``), prompts with media, and
                    llama-cpp-python's vision chat handler names (``Llava15ChatHandler``...)
  default_model.py  the model ``Llama()`` loads when given no path

May import ``errors``, ``native``, ``grammar``, ``generation``, ``chat`` and ``display``;
never ``engine``, ``server`` or ``cli`` (tests/test_layering.py).
"""

from .cache import BaseLlamaCache, LlamaCache, LlamaRAMCache
from .llama import Llama, LlamaSettings, LlamaState
from .tokens import LlamaTokenizer

__all__ = ["BaseLlamaCache", "Llama", "LlamaCache", "LlamaRAMCache", "LlamaSettings", "LlamaState", "LlamaTokenizer"]
