"""Finding a tokenizer for a checkpoint directory, for the command line.

In order: the `tokenizers` package on DIR/tokenizer.json, transformers' AutoTokenizer on DIR,
mamba2c's own byte tokenizer when DIR holds `byte_tokenizer.json` (the demo model), else none
(prompts and outputs are then token ids).
"""
from __future__ import annotations

import codecs
import json
import os
from typing import List, Optional, Protocol

BYTE_TOKENIZER_FILE = "byte_tokenizer.json"


class Tokenizer(Protocol):
    def encode(self, text: str) -> List[int]: ...

    def decoder(self) -> "IncrementalDecoder": ...


class IncrementalDecoder(Protocol):
    def add(self, ids: List[int]) -> str:
        """The text the new ids complete (possibly empty while a character is incomplete)."""


class ByteTokenizer:
    """UTF-8 bytes as tokens: byte b is token `offset + b`; ids outside the 256 bytes (special
    tokens) decode to nothing."""

    def __init__(self, offset: int = 0):
        self.offset = offset

    def encode(self, text: str) -> List[int]:
        return [self.offset + b for b in text.encode("utf-8")]

    def decoder(self) -> "ByteDecoder":
        return ByteDecoder(self.offset)


class ByteDecoder:
    def __init__(self, offset: int):
        self.offset = offset
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, ids: List[int]) -> str:
        data = bytes(i - self.offset for i in ids if 0 <= i - self.offset < 256)
        return self.utf8.decode(data)


class _TextDecoder:
    """Incremental decoding for tokenizers that decode whole sequences: decode everything so
    far and return what was added, holding back a trailing replacement character that the next
    token may complete."""

    def __init__(self, decode):
        self.decode = decode
        self.ids: List[int] = []
        self.shown = 0

    def add(self, ids: List[int]) -> str:
        self.ids.extend(ids)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.shown = text[self.shown:], len(text)
        return new


class _HubTokenizer:
    def __init__(self, encode, decode):
        self._encode, self._decode = encode, decode

    def encode(self, text: str) -> List[int]:
        return list(self._encode(text))

    def decoder(self) -> _TextDecoder:
        return _TextDecoder(self._decode)


def load_tokenizer(directory: str) -> Optional[Tokenizer]:
    """The best tokenizer available for `directory`, or None."""
    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path):
        try:
            import tokenizers

            tok = tokenizers.Tokenizer.from_file(path)
            return _HubTokenizer(lambda text: tok.encode(text).ids,
                                 lambda ids: tok.decode(ids, skip_special_tokens=True))
        except ImportError:
            pass
        try:
            import transformers

            auto = transformers.AutoTokenizer.from_pretrained(directory)
            return _HubTokenizer(lambda text: auto.encode(text),
                                 lambda ids: auto.decode(ids, skip_special_tokens=True))
        except ImportError:
            pass
    byte_path = os.path.join(directory, BYTE_TOKENIZER_FILE)
    if os.path.isfile(byte_path):
        with open(byte_path) as f:
            spec = json.load(f)
        return ByteTokenizer(int(spec.get("offset", 0)))
    return None
