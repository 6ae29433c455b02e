"""Synthetic prompts of a requested length, without a tokenizer.

Prompts are built from a vocabulary of short, common English words that are each a single
token, with their leading space, in the common BPE/SentencePiece tokenizers (Llama, GPT,
Mistral, Qwen). So a prompt of N words is *about* N tokens on a real server (the server's
``usage.prompt_tokens`` gives the exact count, which the records keep) and *exactly* N tokens
on the reference simulator, whose tokenizer is a whitespace split. Exact-length prompts for a
given tokenizer belong to the datasets module (issue: arrivals).

Words are drawn at random per prompt (seeded), so two prompts share no long prefix and a
server's prefix cache does not flatter the measurement.
"""

from __future__ import annotations

import numpy as np

VOCABULARY: tuple[str, ...] = tuple(
    """the of and to in is that it for on was with as be at by this from or have an are not
    but had one all were we when there can more if out so what up about into than them then
    some her would make like him time has two see way could people my first water been call
    who now find long down day did get come made may part over new sound take only little work
    know place year live me back give most very after thing our just name good man think say
    great where help through much before line right too mean old any same tell boy follow came
    want show also around form three small set put end does another well large must big even
    such because turn here why ask went men read need land different home us move try kind
    hand picture again change off play spell air away animal house point page letter mother
    answer found study still learn should world high every near add food between own below
    country plant last school father keep tree never start city earth eye light thought head
    under story saw left few while along might close something seem next hard open example
    begin life always those both paper together got group often run important until children
    side feet car mile night walk white sea began grow took river four carry state once book
    hear stop without second later miss idea enough eat face watch far really almost let above
    girl sometimes mountain cut young talk soon list song being leave family""".split()
)


def word_prompts(lengths: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One prompt of ``lengths[i]`` space-separated vocabulary words for each i."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.min() < 1:
        raise ValueError("prompt lengths must be >= 1 token")
    vocab = np.array(VOCABULARY, dtype=object)
    idx = rng.integers(0, len(VOCABULARY), size=int(lengths.sum()))
    words = vocab[idx]
    out: list[str] = []
    pos = 0
    for n in lengths.tolist():
        out.append(" ".join(words[pos : pos + n]))
        pos += n
    return out
