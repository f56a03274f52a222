"""Caption words <-> ids, built from the training captions only (docs/models.md, A4).

Captions are lower-cased and every character outside `[a-z0-9 ]` becomes a space, so
"A man's hat." is `a man s hat`. A word is kept when it occurs MORE THAN `min_count` times
(the study: "more than 5"). Id 0 is `<EOS>` (there is no start token: the image vector is
the first input) and id 1 is `<UKN>`; the rest follow by decreasing count, then
alphabetically, so the same captions always give the same ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stride.errors import StrideError

VOCABULARY_FILE = "vocabulary.json"
_NOT_WORD = re.compile(r"[^a-z0-9 ]")


def tokenize(text: str) -> list[str]:
    return _NOT_WORD.sub(" ", text.lower()).split()


class Vocabulary:
    EOS = "<EOS>"
    UNKNOWN = "<UKN>"
    eos_id = 0
    unknown_id = 1

    def __init__(self, words: list[str], min_count: int = 5):
        if words[:2] != [self.EOS, self.UNKNOWN]:
            raise ValueError(f"a vocabulary starts with {self.EOS}, {self.UNKNOWN}; got {words[:2]}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words = list(words)
        self.min_count = min_count
        self._ids = {word: index for index, word in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((word for word, count in counts.items() if count > min_count), key=lambda w: (-counts[w], w))
        return cls([cls.EOS, cls.UNKNOWN, *kept], min_count)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.words == self.words

    def id(self, word: str) -> int:
        return self._ids.get(word, self.unknown_id)

    def encode(self, text: str) -> list[int]:
        """Word ids of a caption, unknown words as `unknown_id`; no EOS appended."""
        return [self.id(word) for word in tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first EOS, joined by spaces (padding such as -100 after EOS is never reached)."""
        words = []
        for index in ids:
            index = int(index)
            if index == self.eos_id:
                break
            words.append(self.words[index] if 0 <= index < len(self.words) else self.UNKNOWN)
        return " ".join(words)

    def to_json(self) -> dict[str, Any]:
        return {"words": self.words, "min_count": self.min_count}

    @classmethod
    def from_json(cls, data: Any, where: str = "vocabulary") -> Vocabulary:
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise StrideError(f"{where}: expected an object with 'words', a list of strings")
        min_count = data.get("min_count", 5)
        if not isinstance(min_count, int) or isinstance(min_count, bool):
            raise StrideError(f"{where}: 'min_count' must be an integer, got {min_count!r}")
        try:
            return cls(words, min_count)
        except ValueError as err:
            raise StrideError(f"{where}: {err}") from None

    def to_bytes(self) -> bytes:
        """The canonical file content: what `sha256` hashes and `save` writes."""
        return (json.dumps(self.to_json(), indent=0, ensure_ascii=True) + "\n").encode("ascii")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path, expected_sha256: str | None = None) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise StrideError(f"{path}: vocabulary file not found")
        return cls.from_bytes(path.read_bytes(), str(path), expected_sha256)

    @classmethod
    def from_bytes(cls, raw: bytes, where: str, expected_sha256: str | None = None) -> Vocabulary:
        if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
            raise StrideError(f"{where}: sha256 {hashlib.sha256(raw).hexdigest()} differs from the manifest's "
                              f"{expected_sha256}; the vocabulary was edited or belongs to another dataset")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StrideError(f"{where}: not valid JSON ({err})") from None
        return cls.from_json(data, where)
