"""``evaluation.performance`` for causal language models (task ``text-generation``).

- On a ``text`` column: perplexity, ``exp`` of the mean negative log-likelihood per predicted
  token over all documents (token-weighted), and the mean token log-likelihood itself. Each
  document is read as ``[BOS] text`` (BOS, else EOS, when the tokenizer adds no first token),
  truncated to the model's context (``max_position_embeddings``, or the tokenizer's
  ``model_max_length``; the length used and the documents cut are recorded); every token after
  the first is predicted. Intervals: a seeded percentile bootstrap over documents.
- On ``prompt`` and ``target`` columns: exact-match accuracy, whether the model's greedy
  continuation of as many tokens as the target has equals the target (both stripped of
  surrounding whitespace), with the Wilson interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.analyses.stats import bootstrap_ci, wilson_interval

__all__ = ["LM_KINDS", "document_log_likelihoods", "language_model_performance"]

_BOOTSTRAP = "seeded percentile bootstrap over documents, 95%"
_TEXT_METRICS = {"ci_method": "how the interval was made", "n_bootstrap": "bootstrap resamples",
                 "tokens": "predicted tokens counted", "context": "tokens a document was truncated to",
                 "truncated": "documents longer than the context (cut)"}
LM_KINDS = (
    FindingKind("perplexity", "exp of the mean negative log-likelihood per predicted token over the text column's "
                "documents (token-weighted; each document truncated to the model's context)", "perplexity",
                _BOOTSTRAP, metrics=_TEXT_METRICS,
                artifacts={"documents": {"example": "row index", "tokens": "predicted tokens",
                                         "log_likelihood": "sum of the tokens' log-probabilities (nats)"}},
                lower_is_better=True),
    FindingKind("mean_log_likelihood", "mean log-probability per predicted token (nats) over the documents",
                "nats per token", _BOOTSTRAP, metrics=_TEXT_METRICS),
    FindingKind("exact_match", "share of prompts whose greedy continuation (as many tokens as the target) equals "
                "the target, surrounding whitespace ignored", "fraction", "Wilson score 95% interval of the proportion",
                metrics={"ci_method": "how the interval was made"},
                artifacts={"generations": {"example": "row index", "target": "the target continuation",
                                           "generated": "the model's greedy continuation", "match": "equal?"}}),
)


def context_length(model: Any) -> int:
    """Tokens the model reads at most: its position table's size, else the tokenizer's limit."""
    config = model.model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(min(model.tokenizer.model_max_length, 1 << 20))


def _anchored(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text)["input_ids"]
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if first is not None and (not ids or ids[0] != first):
        ids = [first, *ids]
    return ids


@torch.no_grad()
def document_log_likelihoods(model: Any, texts: list[str], batch_size: int,
                             context: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per document: the sum of its predicted tokens' log-probabilities, their count; and how many were cut."""
    encoded = [_anchored(model.tokenizer, t) for t in texts]
    truncated = sum(len(ids) > context for ids in encoded)
    encoded = [ids[:context] for ids in encoded]
    sums, counts = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, tokens in enumerate(chunk):
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        logits = model.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None])[:, :, 0]
        logp = (logp * mask[:, 1:]).double().sum(1)
        sums[start:start + len(chunk)] = logp.cpu().numpy()
        counts[start:start + len(chunk)] = (mask[:, 1:].sum(1)).cpu().numpy()
    return sums, counts, truncated


@torch.no_grad()
def greedy_continuations(model: Any, prompts: list[str], targets: list[str]) -> list[str]:
    """The model's greedy continuation of each prompt, as many tokens long as its target."""
    tokenizer = model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for prompt, target in zip(prompts, targets):
        ids = torch.tensor([_anchored(tokenizer, prompt)], device=model.device)
        n = max(1, len(tokenizer(target, add_special_tokens=False)["input_ids"]))
        generated = model.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=n, min_new_tokens=n, pad_token_id=pad)
        out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def language_model_performance(ctx: RunContext, n_bootstrap: int, batch_size: int) -> None:
    """The findings of ``LM_KINDS`` that the dataset's columns allow."""
    data, model = ctx.dataset, ctx.model
    where = f"{model.handle.instance.source_uri} on {data.entity.source_uri} ({data.entity.split or 'all'})"
    roles = data.roles
    if "text" not in roles and not ("prompt" in roles and "target" in roles):
        raise ValueError("evaluating a language model needs a text column (perplexity) or prompt and target "
                         "columns (exact match); set dataset.columns")
    if "text" in roles:
        context = context_length(model)
        sums, counts, truncated = document_log_likelihoods(model, data.texts("text"), batch_size, context)
        n = len(sums)

        def mean_ll(i: np.ndarray) -> float:
            return float(sums[i].sum() / counts[i].sum()) if counts[i].sum() else float("nan")

        value = mean_ll(np.arange(n))
        low, high = bootstrap_ci(mean_ll, n, ctx.rng, n_bootstrap)
        info = {"ci_method": "percentile bootstrap", "n_bootstrap": n_bootstrap, "tokens": int(counts.sum()),
                "context": context, "truncated": truncated}
        table = pa.table({"example": np.arange(n), "tokens": counts, "log_likelihood": sums})
        ctx.add_finding(kind="perplexity", value=float(np.exp(-value)), ci=(float(np.exp(-high)), float(np.exp(-low))),
                        n=n, exact=True, unit="perplexity", metrics=info, artifacts={"documents": table},
                        statement=f"perplexity of {where} is {np.exp(-value):.4g} (95% CI {np.exp(-high):.4g}–"
                                  f"{np.exp(-low):.4g}), {int(counts.sum())} tokens in {n} documents")
        ctx.add_finding(kind="mean_log_likelihood", value=value, ci=(low, high), n=n, exact=True,
                        unit="nats per token", metrics=info,
                        statement=f"mean token log-likelihood of {where} is {value:.4f} nats (95% CI "
                                  f"{low:.4f}–{high:.4f}), {int(counts.sum())} tokens in {n} documents")
    if "prompt" in roles and "target" in roles:
        targets = data.texts("target")
        generated = greedy_continuations(model, data.texts("prompt"), targets)
        match = np.array([g.strip() == t.strip() for g, t in zip(generated, targets)])
        n = len(match)
        ci = wilson_interval(int(match.sum()), n)
        table = pa.table({"example": np.arange(n), "target": targets, "generated": generated, "match": match})
        ctx.add_finding(kind="exact_match", value=float(match.mean()), ci=ci, n=n, exact=True, unit="fraction",
                        metrics={"ci_method": "Wilson score interval"}, artifacts={"generations": table},
                        statement=f"exact match of {where} is {match.mean():.4f} (95% CI {ci[0]:.3f}–{ci[1]:.3f}), "
                                  f"n={n}")
    ctx.progress(1, 1)
