"""The prompt game of a causal language model.

Players are the words of a prompt (sub-word tokens grouped by the tokenizer's character
offsets: a token starts a new word when whitespace or a gap precedes it) or its tokens. The
value of a coalition is the log-probability of a target continuation given the prompt with
only those players present: the sum over the target's tokens (or their mean, ``value: mean``).
The target is the dataset's ``target`` column, or the model's own greedy continuation of
``max_new_tokens`` tokens.

The model reads ``[BOS] prompt target``: the target is tokenized on its own and appended (so
it carries its own leading space), and a BOS token (else EOS) is put first when the tokenizer
adds none, so that the empty coalition still has a token to predict the target from. With
a chat template (``messages`` in the data, or ``chat: true``) the prompt is the rendered
conversation up to the assistant's turn, and only the words of the user turns are players;
the template's own tokens are always present.

What a missing player means (``text_mode``):

- ``remove``: its tokens are dropped through the attention mask; the first target token is
  predicted from the last *present* token. ``positions: kept`` gives every token its position
  in the full prompt; ``positions: contiguous`` numbers the present tokens 0, 1, 2, ... so
  the model sees exactly the prompt with those tokens deleted.
- ``mask``: its tokens are replaced by the pad token (``fill: pad``; EOS when the tokenizer has
  no pad token) or the unknown token (``fill: unk``).

Only the logits the value needs are computed (``logits_to_keep``), so a batch costs the
model's forward pass and not a full vocabulary per position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelsci.schemas.errors import ModelsciError

__all__ = ["PROMPT_METRICS", "PromptError", "PromptMasker", "PromptOptions", "explained_output", "prompt_examples"]


class PromptError(ModelsciError, ValueError):
    """A prompt game that cannot be set up (no tokens to explain, no chat template, ...)."""


@dataclass(frozen=True)
class PromptOptions:
    """How a prompt becomes a game (the analysis' parameters of the same names)."""

    players: str = "words"
    text_mode: str = "remove"
    positions: str = "kept"
    fill: str = "pad"
    value: str = "sum"
    max_new_tokens: int = 8
    chat: bool = False


def _chat_text(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation rendered by the tokenizer's chat template, and the character spans of the user turns."""
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError("chat prompts need a tokenizer with a chat template; this one has none "
                          "(give a prompt column and chat: false)")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    spans, start = [], 0
    for message in messages:
        content = str(message.get("content", ""))
        at = text.find(content, start)
        if at < 0:
            raise PromptError("the chat template changes a message's text; cannot find its words in the prompt")
        if message.get("role") == "user":
            spans.append((at, at + len(content)))
        start = at + len(content)
    return text, spans


class PromptMasker:
    """Words (or tokens) of a prompt as players; the value is the log-probability of the target."""

    def __init__(self, model: Any, prompt: str | None, target: str | None, options: PromptOptions,
                 messages: list[dict[str, str]] | None = None) -> None:
        self.model, self.options = model, options
        tokenizer = model.tokenizer
        if tokenizer is None:
            raise PromptError("text-generation models need a tokenizer in their folder")
        if messages is not None or options.chat:
            text, spans = _chat_text(tokenizer, messages or [{"role": "user", "content": prompt or ""}])
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                            return_special_tokens_mask=True)
        else:
            text, spans = prompt or "", [(0, len(prompt or ""))]
            enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        special = list(enc["special_tokens_mask"])
        # A zero-width token (a lone space of a byte-level BPE) belongs to the word it precedes.
        inside = [not s and any(low <= b < high or (b < high and e > low) for low, high in spans)
                  for (b, e), s in zip(offsets, special)]
        if not ids or inside[0]:
            anchor = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if anchor is None:
                raise PromptError("the tokenizer has neither a BOS nor an EOS token to start the prompt with")
            ids, offsets, inside = [anchor, *ids], [(0, 0), *offsets], [False, *inside]
        self.text = text
        self.players, self.names = self._players(text, offsets, inside, options.players)
        if not self.players:
            raise PromptError("the prompt has no tokens to explain")
        self.n_players = len(self.players)
        self.prompt_length = len(ids)
        self.device = model.device
        if target is None:
            target_ids = self._greedy(ids, options.max_new_tokens)
            self.generated = True
        else:
            target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            self.generated = False
        if not target_ids:
            raise PromptError("the target continuation has no tokens")
        self.target_ids = torch.tensor(target_ids, device=self.device)
        self.target = tokenizer.decode(target_ids)
        self.ids = torch.tensor([ids + list(target_ids)], device=self.device)
        membership = torch.zeros(self.n_players, self.ids.shape[1], dtype=torch.bool)
        for p, positions in enumerate(self.players):
            membership[p, positions] = True
        self.membership = membership.to(self.device)
        self.fill_id = self._fill_id(tokenizer, options.fill)
        self.forward_passes = 0

    @staticmethod
    def _players(text: str, offsets: list[tuple[int, int]], inside: list[bool],
                 kind: str) -> tuple[list[list[int]], list[str]]:
        players: list[list[int]] = []
        spans: list[list[int]] = []
        previous_end = None
        for i, ((begin, end), member) in enumerate(zip(offsets, inside)):
            if not member:
                previous_end = None
                continue
            new_word = (kind == "tokens" or previous_end is None or begin != previous_end
                        or text[begin:begin + 1].isspace())
            if new_word:
                players.append([i])
                spans.append([begin, end])
            else:
                players[-1].append(i)
                spans[-1][1] = end
            previous_end = end
        return players, [text[b:e].strip() or text[b:e] for b, e in spans]

    @staticmethod
    def _fill_id(tokenizer: Any, fill: str) -> int | None:
        if fill == "unk":
            return tokenizer.unk_token_id
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def _greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        tokenizer = self.model.tokenizer
        inputs = torch.tensor([ids], device=self.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out = self.model.model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                        max_new_tokens=max_new_tokens, pad_token_id=pad)
        return out[0, len(ids):].tolist()

    def present_tokens(self, coalitions: np.ndarray) -> torch.Tensor:
        """(coalitions x sequence) whether each token is present: non-player tokens always are."""
        absent = torch.as_tensor(~coalitions, device=self.device).float() @ self.membership.float()
        return absent == 0

    @torch.no_grad()
    def values(self, coalitions: np.ndarray) -> np.ndarray:
        m, length = len(coalitions), self.ids.shape[1]
        p, t = self.prompt_length, len(self.target_ids)
        present = self.present_tokens(np.asarray(coalitions, dtype=bool))
        ids = self.ids.expand(m, -1).clone()
        positions = torch.arange(length, device=self.device).expand(m, -1)
        if self.options.text_mode == "remove":
            attention = present.long()
            if self.options.positions == "contiguous":
                positions = (attention.cumsum(1) - 1).clamp(min=0)
            # The first target token is predicted from the last prompt token that is present.
            first = p - 1 - torch.flip(present[:, :p].long(), [1]).argmax(1)
        else:
            if self.fill_id is None:
                raise PromptError(f"the tokenizer has no {self.options.fill} token to fill missing players with")
            ids[~present] = self.fill_id
            attention = torch.ones_like(ids)
            first = torch.full((m,), p - 1, device=self.device)
        predictors = torch.cat([first[:, None], torch.arange(p, p + t - 1, device=self.device).expand(m, -1)], 1)
        keep = torch.unique(predictors)
        logits = self.model.model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                  logits_to_keep=keep).logits
        self.forward_passes += m
        where = torch.searchsorted(keep, predictors)
        chosen = logits.gather(1, where[:, :, None].expand(-1, -1, logits.shape[-1])).float()
        logp = torch.log_softmax(chosen, -1).gather(2, self.target_ids.expand(m, -1)[:, :, None])[:, :, 0]
        total = logp.sum(1) if self.options.value == "sum" else logp.mean(1)
        return total.double().cpu().numpy()

    def captum(self, method: str, n_steps: int) -> np.ndarray:
        """Per-player attributions by a Captum layer method on the input embeddings, summed per player.

        The forward is the value of the full coalition as a function of the embeddings; the
        baseline of integrated gradients replaces every player token by the fill token.
        """
        import captum.attr as ca

        module = self.model.model
        p, t = self.prompt_length, len(self.target_ids)
        target = self.target_ids

        def forward(input_ids: torch.Tensor) -> torch.Tensor:
            logits = module(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[:, p - 1:p + t - 1]
            logp = torch.log_softmax(logits.float(), -1).gather(2, target.expand(len(input_ids), -1)[:, :, None])
            total = logp[:, :, 0].sum(1)
            return total if self.options.value == "sum" else total / t

        layer = module.get_input_embeddings()
        fill = self.fill_id if self.fill_id is not None else 0
        baseline = self.ids.clone()
        baseline[0, self.membership.any(0)] = fill
        if method == "integrated_gradients":
            attr = ca.LayerIntegratedGradients(forward, layer).attribute(self.ids, baselines=baseline, n_steps=n_steps,
                                                                        method="gausslegendre")
        elif method == "gradient_x_input":
            attr = ca.LayerGradientXActivation(forward, layer).attribute(self.ids)
        else:
            raise ValueError(f"unknown text method {method!r}")
        per_token = attr.detach().double().sum(-1)[0]
        return (self.membership.double() @ per_token.to(self.membership.device)).cpu().numpy()

    def recorded(self) -> dict[str, Any]:
        """What the finding records about the explained output."""
        return {"target": self.target, "target_generated": self.generated, "target_tokens": len(self.target_ids)}


def prompt_examples(dataset: Any, rows: range) -> Iterator[tuple[int, str | None, str | None,
                                                                   list[dict[str, str]] | None]]:
    """(row, prompt, target, messages) of each explained row; absent roles are None."""
    roles = dataset.roles
    if "prompt" not in roles and "messages" not in roles:
        raise PromptError("text-generation games need a prompt (or messages) column (set dataset.columns.prompt)")
    prompts = dataset.texts("prompt") if "prompt" in roles else None
    targets = dataset.texts("target") if "target" in roles else None
    messages = dataset.table.column(roles["messages"]).to_pylist() if "messages" in roles else None
    for i in rows:
        turns = None
        if messages is not None:
            turns = messages[i]
            if not (isinstance(turns, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                    for m in turns)):
                raise PromptError(f"row {i}: messages must be a list of {{role, content}} turns")
        yield i, prompts[i] if prompts else None, targets[i] if targets else None, turns


PROMPT_METRICS = {
    "target": "text generation only: the continuation whose log-probability is explained",
    "target_generated": "text generation only: whether it is the model's greedy continuation (else the data's)",
    "target_tokens": "text generation only: its number of tokens",
}
"""Metrics a finding on a prompt game adds, documented once for every kind that carries them."""


def explained_output(game: Any) -> dict[str, Any]:
    """The metrics that say what a game explains: the target of a prompt game, else nothing."""
    masker = getattr(game, "masker", None)
    return masker.recorded() if isinstance(masker, PromptMasker) else {}
