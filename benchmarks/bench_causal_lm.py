"""Prompt-game benchmarks on a small causal LM, all in one run (ratios, not absolute times).

1. Overhead: exact order-2 k-SII for a 12-word prompt (4,096 coalitions) through the game
   evaluator and the prompt masker, against a bare batched loop pushing the same 4,096
   masked prompts through the model (attention mask, full logits) at its best batch size.
2. Captum's ``LLMAttribution``: with ``FeatureAblation`` (first order, exact), the same values
   as modelsci's occlusion with the same replacement token, and the time of each; with
   ``ShapleyValueSampling`` at the number of model evaluations of the exact k-SII, the time
   against modelsci's exact k-SII.
3. On a GPU only: a randomly initialised Llama-architecture model of about 0.5B parameters in
   bfloat16, model evaluations per second of the prompt game.

The model is a randomly initialised GPT-2 (4 layers, width 256) with a word-level tokenizer
over the prompt's words, so that every word is one token and one player.

Run: python benchmarks/bench_causal_lm.py  (writes benchmarks/results/causal_lm.json)
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_games import timed  # the script's folder is on sys.path

from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import all_coalitions, shapley_interactions
from modelsci.analyses.games.prompt_game import PromptMasker, PromptOptions
from modelsci.ingest.loading import load_model, resolve_device
from modelsci.ingest.models import resolve_model
from modelsci.schemas.manifest import ModelSpec

PROMPT = "the quick brown fox jumps over the lazy dog near a river"
TARGET = " and then sleeps"


def _tokenizer():  # noqa: ANN202 - a PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set((PROMPT + TARGET).split()))
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def small_gpt2(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@torch.no_grad()
def bare_loop(model: Any, masker: PromptMasker, coalitions: np.ndarray, batch: int) -> np.ndarray:
    """The same masked prompts, batch by batch: attention mask, full logits, log-softmax, gather."""
    p, t = masker.prompt_length, len(masker.target_ids)
    out = []
    for start in range(0, len(coalitions), batch):
        rows = coalitions[start:start + batch]
        present = masker.present_tokens(rows)
        ids = masker.ids.expand(len(rows), -1)
        logits = model.model(input_ids=ids, attention_mask=present.long()).logits.float()
        first = p - 1 - torch.flip(present[:, :p].long(), [1]).argmax(1)
        rows_idx = torch.arange(len(rows))
        logp = torch.log_softmax(logits[rows_idx, first], -1)[:, masker.target_ids[0]]
        rest = torch.log_softmax(logits[:, p:p + t - 1], -1).gather(
            2, masker.target_ids[1:].expand(len(rows), -1)[:, :, None])[:, :, 0].sum(1)
        out.append((logp + rest).double().cpu().numpy())
    return np.concatenate(out)


def captum_llm(model: Any, masker: PromptMasker, method: str, **kwargs: Any) -> tuple[np.ndarray, int]:
    """Captum's LLMAttribution (one pass per perturbation, sequence-level forward), and its forward passes."""
    import captum.attr as ca

    tokenizer = model.tokenizer
    calls = 0
    forward = model.model.forward

    def counted(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return forward(*args, **kw)

    model.model.forward = counted
    try:
        inp = ca.TextTokenInput("<s> " + PROMPT, tokenizer, baselines=tokenizer.pad_token_id, skip_tokens=["<s>"])
        attr_method = getattr(ca, method)(model.model)
        llm = ca.LLMAttribution(attr_method, tokenizer)
        result = llm.attribute(inp, target=masker.target_ids.cpu(), forward_in_tokens=False, **kwargs)
    finally:
        model.model.forward = forward
    return result.seq_attr.double().cpu().numpy(), calls


def main() -> None:
    device = resolve_device("auto")
    out: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = small_gpt2(Path(tmp) / "gpt2")
        model = load_model(resolve_model(ModelSpec(source=str(folder), task="text-generation")), device)
        masker = PromptMasker(model, PROMPT, TARGET, PromptOptions())
        n = masker.n_players
        assert n == 12, masker.names
        coalitions = all_coalitions(n)
        batch_sizes = [64, 128, 256, 512] if device == "cpu" else [512, 1024, 2048, 4096]
        bare = {b: timed(lambda b=b: bare_loop(model, masker, coalitions, b))[0] for b in batch_sizes}
        best_batch = min(bare, key=bare.get)

        def modelsci_ksii() -> Any:
            game = GameEvaluator(PromptMasker(model, PROMPT, TARGET, PromptOptions()), best_batch)
            return shapley_interactions(game, n, "k-SII", 2, 2 ** n), game

        t_modelsci, (ksii, game) = timed(modelsci_ksii)
        check = bare_loop(model, masker, coalitions[:64], 64)
        assert np.allclose(check, game(coalitions[:64]), atol=1e-4)
        out["ksii_exact_12_words"] = {
            "coalitions": 2 ** n, "model_evaluations": game.model_evaluations, "modelsci_s": t_modelsci,
            "bare_loop_s_by_batch": bare, "bare_best_batch": best_batch,
            "ratio_modelsci_over_bare": t_modelsci / bare[best_batch], "target_ratio_at_most": 1.15}

        occ_masker = PromptMasker(model, PROMPT, TARGET, PromptOptions(text_mode="mask", fill="pad"))

        def modelsci_occlusion() -> np.ndarray:
            g = GameEvaluator(PromptMasker(model, PROMPT, TARGET, PromptOptions(text_mode="mask", fill="pad")),
                              best_batch)
            return g.value_full - g(~np.eye(n, dtype=bool))

        t_occ, ours = timed(modelsci_occlusion)
        t_fa, (theirs, fa_calls) = timed(lambda: captum_llm(model, occ_masker, "FeatureAblation"), repeat=1)
        out["occlusion_vs_captum_feature_ablation"] = {
            "modelsci_s": t_occ, "captum_s": t_fa, "captum_forward_passes": fa_calls, "speedup": t_fa / t_occ,
            "max_abs_difference": float(np.abs(ours - theirs).max())}
        samples = max(1, 2 ** n // (n + 1))  # ShapleyValueSampling: n + 1 evaluations per permutation
        t_svs, (_, svs_calls) = timed(lambda: captum_llm(model, masker, "ShapleyValueSampling", n_samples=samples),
                                      repeat=1)
        out["ksii_vs_captum_shapley_value_sampling"] = {
            "captum_permutations": samples, "captum_forward_passes": svs_calls, "captum_s": t_svs,
            "modelsci_exact_ksii_s": t_modelsci, "speedup": t_svs / t_modelsci, "target_speedup_at_least": 5}
        out["top_pair"] = max(ksii.of_order(2).items(), key=lambda kv: abs(kv[1]))[0]
    if device.startswith("cuda"):
        out["llama_0p5b_bf16"] = llama_throughput(device)
    path = Path(__file__).parent / "results" / "causal_lm.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(out, indent=2, default=str))


def llama_throughput(device: str) -> dict[str, Any]:
    """Model evaluations per second of the prompt game on a ~0.5B random Llama in bfloat16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama"
        tokenizer = _tokenizer()
        config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                             num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=512,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        torch.manual_seed(0)
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model = load_model(resolve_model(ModelSpec(source=str(folder), task="text-generation")), device)
        params = sum(p.numel() for p in model.model.parameters())
        dtype = str(next(model.model.parameters()).dtype)
        coalitions = np.random.default_rng(0).random((4096, 12)) < 0.5
        results = {}
        for batch in (256, 1024):
            game = GameEvaluator(PromptMasker(model, PROMPT, TARGET, PromptOptions()), batch)
            game(coalitions[:batch])  # warm-up
            start = time.perf_counter()
            game(coalitions[batch:])
            torch.cuda.synchronize()
            results[batch] = (len(coalitions) - batch) / (time.perf_counter() - start)
        return {"parameters": params, "dtype": dtype, "evaluations_per_second_by_batch": results}


if __name__ == "__main__":
    main()
