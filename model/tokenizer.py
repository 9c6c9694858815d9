"""Prompts to token ids and generated ids back to text, through the `tokenizers` library.

A PaliGemma prompt is `<image>` x N, `<bos>`, the prefix text, then a newline token: the newline separates the
prefix from the answer, exactly as in training. The tokenizer adds no special tokens of its own here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer

from .config import CheckpointError

# Tokens that must each be a single id: detection and segmentation answers are written with them.
REQUIRED_SINGLE_TOKENS = ("<image>", "<bos>", "<eos>", "<pad>", "<loc0000>", "<loc1023>", "<seg000>", "<seg127>")


class PromptTokenizer:
    def __init__(self, tokenizer: Tokenizer, source: str = "tokenizer.json"):
        self.tok = tokenizer
        ids = {}
        for token in REQUIRED_SINGLE_TOKENS:
            ids[token] = tokenizer.token_to_id(token)
            if ids[token] is None:
                raise CheckpointError(f"{source}: token {token!r} is missing; this is not a PaliGemma tokenizer")
        self.image_id, self.bos_id = ids["<image>"], ids["<bos>"]
        self.eos_id, self.pad_id = ids["<eos>"], ids["<pad>"]
        self.loc0_id, self.seg0_id = ids["<loc0000>"], ids["<seg000>"]
        newline = tokenizer.token_to_id("\n")
        if newline is None:
            pieces = tokenizer.encode("\n", add_special_tokens=False).ids
            if len(pieces) != 1:
                raise CheckpointError(f"{source}: the newline must be one token, got ids {pieces}")
            newline = pieces[0]
        self.newline_id = newline

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTokenizer:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: file is missing (the tokenizer is needed to build prompts)")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises plain Exceptions with terse messages
            raise CheckpointError(f"{path}: not a readable tokenizer.json ({e})") from e
        return cls(tok, source=str(path))

    def encode_prompt(self, prompt: str, num_image_tokens: int) -> list[int]:
        text = self.tok.encode(prompt, add_special_tokens=False).ids
        return [self.image_id] * num_image_tokens + [self.bos_id] + text + [self.newline_id]

    def batch(self, prompts: list[str], num_image_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids long[B, T] and the bool[B, T] mask of real tokens, so every prompt ends at T - 1."""
        rows = [self.encode_prompt(p, num_image_tokens) for p in prompts]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        valid = torch.zeros((len(rows), T), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, T - len(r) :] = torch.tensor(r)
            valid[i, T - len(r) :] = True
        return ids, valid

    def decode(self, ids: list[int]) -> str:
        """Text with special tokens kept: <loc>/<seg> tokens are the answer of detection and segmentation."""
        return self.tok.decode(ids, skip_special_tokens=False)

    def pieces(self, ids: list[int]) -> list[str]:
        """Each token's share of `decode(ids)`, so that "".join(pieces) == decode(ids) exactly.

        Decoding token by token can differ from decoding the whole (byte fallback splits a character over several
        tokens, decoders merge spaces), so a token's piece is how far the decoded prefix ending at it agrees with
        the full text, never moving backwards; the last token takes whatever remains.
        """
        full = self.decode(ids)
        bounds = [0]
        for i in range(1, len(ids)):
            prefix = self.decode(ids[:i])
            agree = next(
                (j for j, (a, b) in enumerate(zip(prefix, full, strict=False)) if a != b), min(len(prefix), len(full))
            )
            bounds.append(max(bounds[-1], agree))
        bounds.append(len(full))
        return [full[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)] if ids else []
