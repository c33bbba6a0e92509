"""The demo's causal language model: a tiny GPT-2 that learns sums modulo 10.

Sentences read ``3 + 4 = 7`` (one token per symbol, a word-level tokenizer). The answer needs
both operands: with one of them missing it is any digit, and the model is trained on such
sentences too. The prompt game on ``3 + 4 =`` with
target `` 7`` therefore shows an interaction between the two operands, and neither alone
explains the answer's log-probability.

Training is deterministic (fixed seeds, one thread) and takes about half a minute on one CPU
core. The demo and the tests use the weights it made, shipped in ``examples/demo/modsum_gpt2``
(400 kB); ``python -m modelsci.demo_lm examples/demo/modsum_gpt2`` makes them again, and the
demo trains them itself when they are missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from modelsci.demo_models import one_thread, shipped_or_trained

__all__ = ["SPECIALS", "modsum_prompts", "modsum_tokenizer", "train_demo_lm", "train_modsum_gpt2"]

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
_CARD = ("---\nlicense: apache-2.0\ntags: [modelsci-demo, text-generation]\n---\n"
         "A two-layer GPT-2 trained on sums modulo 10 written as `3 + 4 = 7`.\n")


def modsum_tokenizer():  # noqa: ANN201 - a transformers PreTrainedTokenizerFast
    """A word-level tokenizer over the digits, ``+`` and ``=``, with BOS, EOS, pad and unk tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*SPECIALS, *map(str, range(10)), "+", "="])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _sequences(tokenizer) -> torch.Tensor:  # noqa: ANN001 - the tokenizer above
    rows = [[tokenizer.bos_token_id, *tokenizer(f"{a} + {b} = {(a + b) % 10}")["input_ids"]]
            for a in range(10) for b in range(10)]
    return torch.tensor(rows)


def train_modsum_gpt2(folder: Path, *, steps: tuple[int, int] = (400, 600), seed: int = 0) -> Path:
    """Train the modular-sum GPT-2 on all 100 sums and save it (safetensors) with its tokenizer.

    ``steps``: full-batch steps on the whole sums, then on the whole and the masked ones together.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    with one_thread():
        torch.manual_seed(seed)
        tokenizer = modsum_tokenizer()
        # No dropout: 100 sentences are memorised, not generalised from.
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=8, n_embd=64, n_layer=2, n_head=4,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        model = GPT2LMHeadModel(config)
        # Every sum whole, and three more times with a random subset of the prompt's four words
        # removed through the attention mask, drawn again at every step, the answer predicted
        # from the last word present: the prompt game's default masking. Over the draws, with an
        # operand missing the answer is each digit equally often, so the model learns that one
        # operand alone says nothing, and that "+" and "=" say nothing either. The whole sums
        # come first, alone: learning both at once from the start is several times slower.
        sums = _sequences(tokenizer)
        prompts, answers = sums[:, :-1].repeat(4, 1), sums[:, -1].repeat(4)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        model.train()
        for step in range(sum(steps)):
            mask = torch.ones_like(prompts)
            mask[100:, 1:] = (torch.rand((300, 4), generator=generator) < 0.5).long()
            rows = slice(0, 100) if step < steps[0] else slice(None)
            logits = model(input_ids=prompts[rows], attention_mask=mask[rows]).logits
            last = mask.shape[1] - 1 - torch.flip(mask[rows], [1]).argmax(1)
            loss = torch.nn.functional.cross_entropy(logits[torch.arange(len(last)), last], answers[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(_CARD)
    return folder


def train_demo_lm(models: Path) -> list[str]:
    """Put the modular-sum GPT-2 in ``models/modsum_gpt2``: the shipped weights, else trained here.

    Returns its name when it was trained.
    """
    return shipped_or_trained(models, "modsum_gpt2", train_modsum_gpt2)


def modsum_prompts(path: Path, pairs: list[tuple[int, int]] | None = None) -> Path:
    """A Parquet file of prompts ``a + b =`` and targets `` (a+b)%10``."""
    pairs = pairs or [(3, 4), (7, 8), (5, 9), (2, 6), (9, 1), (0, 7)]
    pq.write_table(pa.table({"prompt": [f"{a} + {b} =" for a, b in pairs],
                             "target": [f" {(a + b) % 10}" for a, b in pairs]}), path)
    return path


def _accuracy(folder: Path) -> float:
    """Share of the 100 sums whose answer the model puts first (a check when regenerating)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    data = _sequences(modsum_tokenizer())
    with torch.no_grad():
        predicted = model(input_ids=data[:, :-1]).logits[:, -1].argmax(-1)
    return float(np.mean((predicted == data[:, -1]).numpy()))


if __name__ == "__main__":
    out = train_modsum_gpt2(Path(sys.argv[1]))
    print(f"{out}: answers {_accuracy(out):.0%} of the 100 sums")
