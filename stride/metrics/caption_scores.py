"""The MSCOCO caption server's metrics (docs/models.md, A4): BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

The scorers are pycocoevalcap's, the code behind the COCO server's numbers: every
candidate is scored against all references of its image, and its `Cider` is CIDEr-D (idf
over the references of the scored images, clipping, length penalty, x10), so CIDEr-D
depends on the whole set scored, not on each image alone. Captions are tokenised as the
server does, by Stanford's PTBTokenizer (lower-cased, then the server's punctuation tokens
dropped). PTBTokenizer and METEOR run in Java; without `java` the same tokenisation is
approximated in Python (`ptb_like_tokens`) and METEOR is skipped, with the reason in
`CaptionScores.skipped`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import re
import shutil
import subprocess
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stride.errors import StrideError

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
JAVA_METRICS = ("METEOR",)
Tokenizer = Literal["auto", "ptb", "python"]

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS: the tokens the server drops after PTB tokenisation.
# It is compared after lower-casing, so the bracket tokens (-lrb- ...) survive, as on the server.
SERVER_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                                ".", "?", "!", ",", ":", "-", "--", "...", ";"])
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)(?=\W|$)")
_ABBREVIATION = re.compile(r"^([a-z]\.){2,}$")  # u.s., p.m., e.g.: PTB keeps their final period
_EDGE_PUNCTUATION = ".?!,:;`'"

_log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class CaptionScores:
    """`values`: BLEU-1..BLEU-4, METEOR, ROUGE-L, CIDEr-D (those computed); `skipped`: metric -> why not."""

    values: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)


def java_available() -> bool:
    return shutil.which("java") is not None


def ptb_like_tokens(caption: str) -> str:
    """PTBTokenizer -lowerCase plus the server's punctuation removal, in Python, for machines without java.

    Splits clitics ("isn't" -> "is n't", "man's" -> "man 's"), drops quotes and sentence
    punctuation at word edges, keeps hyphenated words, numbers such as 3.5 and 1,000, and
    letter abbreviations (u.s.), and writes brackets as -lrb- ... as PTB does. Rare cases
    (other abbreviations such as "etc.") can differ from Java's output.
    """
    text = caption.lower().replace('"', " ")
    for bracket, token in _BRACKETS.items():
        text = text.replace(bracket, f" {token} ")
    kept = []
    for token in _CLITIC.sub(r" \1", text).split():
        if token in _BRACKETS.values() or _ABBREVIATION.match(token):
            kept.append(token)
            continue
        core = token.rstrip(_EDGE_PUNCTUATION + "-") if token.strip("-") else ""
        token = core + "." if _ABBREVIATION.match(core + ".") and token[len(core):].startswith(".") else core
        if token not in _CLITICS:
            token = token.lstrip(_EDGE_PUNCTUATION)
        if token and token not in SERVER_PUNCTUATION:
            kept.append(token)
    return " ".join(kept)


def _ptb_jar() -> Path:
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    return Path(ptb.__file__).parent / ptb.STANFORD_CORENLP_3_4_1_JAR


def ptb_tokens(captions: Sequence[str]) -> list[str]:
    """Stanford PTBTokenizer (pycocoevalcap's jar and flags) over captions, one line each, then the
    server's punctuation removal. Run here rather than through pycocoevalcap's wrapper, which writes a
    temporary file into its own package folder and lets the tokenizer's log through to stderr."""
    lines = [caption.replace("\n", " ").replace("\r", " ") for caption in captions]
    command = ["java", "-cp", str(_ptb_jar()), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "UTF-8"]
    result = subprocess.run(command, input="\n".join(lines).encode() + b"\n", capture_output=True, check=False)
    tokenized = result.stdout.decode().split("\n")
    if result.returncode != 0 or len(tokenized) < len(lines):
        raise RuntimeError(f"PTBTokenizer failed (exit {result.returncode}, {len(tokenized)} lines for "
                           f"{len(lines)} captions): {result.stderr.decode()[-500:]}")
    return [" ".join(w for w in line.split() if w not in SERVER_PUNCTUATION) for line in tokenized[:len(lines)]]


def _resolve_tokenizer(tokenizer: Tokenizer) -> str:
    if tokenizer == "auto":
        return "ptb" if java_available() else "python"
    if tokenizer == "ptb" and not java_available():
        raise StrideError("caption metrics: tokenizer 'ptb' needs `java` on the PATH; use 'auto' or 'python'")
    return tokenizer


def _tokenized(candidates: list[str], references: list[list[str]],
               tokenizer: str) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """pycocoevalcap's (gts, res): image index -> tokenised references, and -> [tokenised candidate]."""
    flat = candidates + [reference for image in references for reference in image]
    tokens = ptb_tokens(flat) if tokenizer == "ptb" else [ptb_like_tokens(caption) for caption in flat]
    res = {i: [tokens[i]] for i in range(len(candidates))}
    gts, start = {}, len(candidates)
    for i, image in enumerate(references):
        gts[i] = tokens[start:start + len(image)]
        start += len(image)
    return gts, res


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _log.warning(message)


def _score(metric: str, gts: dict[int, list[str]], res: dict[int, list[str]]) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print their counts
        if metric == "BLEU":
            from pycocoevalcap.bleu.bleu import Bleu

            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            return {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
        if metric == "ROUGE_L":
            from pycocoevalcap.rouge.rouge import Rouge

            return {"ROUGE-L": float(Rouge().compute_score(gts, res)[0])}
        if metric == "CIDEr":
            from pycocoevalcap.cider.cider import Cider

            return {"CIDEr-D": float(Cider().compute_score(gts, res)[0])}
        return {"METEOR": float(_meteor().compute_score(gts, res)[0])}


_meteor_scorer = None


def _meteor():
    """One METEOR java process per Python process, reused: starting one (loading its paraphrase tables) takes
    about 11 s, and an evaluation scores the model and the baseline, a promotion scores again. The process
    holds no state between calls (each score is one request) and is killed at exit."""
    global _meteor_scorer
    if _meteor_scorer is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor_scorer = Meteor()
        atexit.register(_stop_meteor)
    return _meteor_scorer


def _stop_meteor() -> None:
    global _meteor_scorer
    scorer, _meteor_scorer = _meteor_scorer, None
    del scorer  # pycocoevalcap's __del__ kills and waits for the java process


def caption_scores(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]], *,
                   metrics: Sequence[str] = METRICS, tokenizer: Tokenizer = "auto") -> CaptionScores:
    """Corpus scores of one generated caption per image against all of that image's references.

    `tokenizer`: "ptb" (Java, the server's), "python" (`ptb_like_tokens`, no Java: what the
    per-epoch validation uses) or "auto" (ptb when java is on the PATH). Java metrics
    (METEOR) are skipped without java, reported in `skipped` and logged once.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise StrideError(f"caption metrics: unknown {', '.join(unknown)}; allowed: {', '.join(METRICS)}")
    if set(candidates) != set(references):
        raise StrideError(f"caption metrics: {len(set(candidates) ^ set(references))} images have a candidate "
                          "but no references, or references but no candidate")
    keys = list(candidates)
    if not keys:
        return CaptionScores({}, {m: "no captions to score" for m in metrics})
    empty = [key for key in keys if not references[key]]
    if empty:
        raise StrideError(f"caption metrics: images without references: {empty[:5]}")
    skipped: dict[str, str] = {}
    if not java_available():
        for metric in set(metrics) & set(JAVA_METRICS):
            skipped[metric] = "needs `java` on the PATH (pycocoevalcap runs it in Java)"
            _warn_once(f"caption metrics: {metric} skipped: java is not on the PATH")
    gts, res = _tokenized([candidates[k] for k in keys], [list(references[k]) for k in keys],
                          _resolve_tokenizer(tokenizer))
    values: dict[str, float] = {}
    for metric in metrics:
        if metric not in skipped:
            values.update(_score(metric, gts, res))
    return CaptionScores(values, skipped)
