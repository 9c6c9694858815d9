"""A tokenizer with PaliGemma's special-token layout for models with a small vocabulary.

PaliGemma's vocabulary is Gemma's 256,000 text ids, then 1024 `<locNNNN>`, 128 `<segNNN>` and `<image>`. Models
trained from scratch here (the bundled shapes model, the test and benchmark sizes) keep that layout on a small
text vocabulary: <pad> 0, <eos> 1, <bos> 2, <unk> 3, the newline, 256 byte-fallback ids, printable ASCII, and
whole-word tokens for the words their prompts and answers use, padded to `loc_offset`. Code that reads ids from
the tokenizer (never hard-coded) works the same on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
# Whole-word tokens, so that prompts tokenize into words as Gemma's do, not only into characters.
WORDS = [
    "caption",
    "describe",
    "answer",
    "question",
    "detect",
    "segment",
    "ocr",
    "en",
    "fr",
    "de",
    "es",
    "ja",
    "cat",
    "dog",
    "person",
    "car",
    "bird",
    "tree",
    "house",
    "the",
    "a",
    "an",
    "of",
    "on",
    "in",
    "and",
    "what",
    "is",
    "color",
    "how",
    "many",
    "where",
    "this",
    "that",
    "image",
    "picture",
    "photo",
    "text",
    "sign",
    "red",
    "blue",
    "green",
    "left",
    "right",
]


def build_tokenizer(loc_offset: int = 768, words: Sequence[str] = WORDS) -> Tokenizer:
    """A byte-fallback BPE tokenizer with PaliGemma's layout; <loc0000> gets id `loc_offset`.

    Each of `words` becomes a single token (with and without a leading space's "\u2581").
    """
    vocab: dict[str, int] = {}
    for t in [*SPECIALS, "\n", *(f"<0x{b:02X}>" for b in range(256)), "\u2581"]:
        vocab[t] = len(vocab)
    for c in map(chr, range(33, 127)):
        vocab.setdefault(c, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(words):
        # Merge whatever the merges so far make of the word, left to right: earlier merges from other words
        # (say "le" from "left") would otherwise split a chain built letter by letter ("circl" + "e").
        pieces = _apply_merges(list(word), merges)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair[0] + pair[1] not in vocab:
                merges.append(pair)
                vocab[pair[0] + pair[1]] = len(vocab)
            pieces = _apply_merges([pair[0] + pair[1], *pieces[2:]], merges)
    for word in dict.fromkeys(words):  # after every word is whole, so "\u2581an" never splits " and"
        if "\u2581" + word not in vocab:
            merges.append(("\u2581", word))
            vocab["\u2581" + word] = len(vocab)
    if len(vocab) > loc_offset:
        raise ValueError(f"text vocabulary needs {len(vocab)} ids, more than loc_offset={loc_offset}")
    for i in range(len(vocab), loc_offset):
        vocab[f"<unused{i}>"] = i
    extra = [f"<loc{i:04d}>" for i in range(1024)] + [f"<seg{i:03d}>" for i in range(128)] + ["<image>"]
    for t in extra:
        vocab[t] = len(vocab)

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\u2581*[^\u2581]*"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    return tok


def _apply_merges(pieces: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """BPE on one word: repeatedly join the adjacent pair that ranks first in `merges`."""
    ranks = {pair: i for i, pair in enumerate(merges)}
    while len(pieces) > 1:
        pairs = zip(pieces[:-1], pieces[1:], strict=True)
        rank, i = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairs))
        if rank == len(ranks):
            break
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2 :]]
    return pieces


def write_tokenizer(folder: str | Path, loc_offset: int = 768, words: Sequence[str] = WORDS) -> Path:
    path = Path(folder) / "tokenizer.json"
    build_tokenizer(loc_offset, words).save(str(path))
    return path
