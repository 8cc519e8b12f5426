"""Per-class prompts: the recipe's template, a rare token and the class name."""

from __future__ import annotations

import re

# Candidates for per-class rare tokens ("auto"): short strings that CLIP's BPE keeps as one token and
# that carry little meaning; the first ones that are single tokens in the model's tokenizer are used.
RARE_TOKEN_CANDIDATES = (
    "hta", "sks", "xon", "qel", "vry", "zud", "pom", "tiv", "wub", "kex", "jag", "lor", "myr", "bex",
)


def single_token(tokenizer, word: str) -> bool:
    return len(tokenizer.tokenize(word)) == 1


def choose_tokens(tokenizer, n_classes: int, token: str) -> list[str]:
    """The rare token of each class: the same ``token`` for all, or distinct ones for ``auto``.

    Deterministic: candidates are tried in a fixed order, so the same tokenizer gives the same tokens.
    """
    if token != "auto":
        return [token] * n_classes
    pool = [w for w in RARE_TOKEN_CANDIDATES if single_token(tokenizer, w)]
    if len(pool) < n_classes:
        # fall back to numbered tokens: not single tokens, but still distinct and deterministic
        pool += [f"{pool[i % len(pool)] if pool else 'tok'}{i}" for i in range(n_classes - len(pool))]
    return pool[:n_classes]


def class_prompts(classnames: list[str], template: str, tokens: list[str], use_class_name: bool = True) -> list[str]:
    prompts = []
    for name, token in zip(classnames, tokens):
        text = template.format(token=token, name=name if use_class_name else "").replace("  ", " ")
        prompts.append(re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split())))
    return prompts
