"""Causal language models: loading, the prompt game against independent recomputations, and the
analyses through the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modelsci import catalogue
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import all_coalitions, shapley_interactions
from modelsci.analyses.games.prompt_game import PromptMasker, PromptOptions
from modelsci.ingest.loading import LoadedModel, load_model
from modelsci.ingest.models import ModelError, resolve_model
from modelsci.schemas.manifest import ModelSpec
from tests.conftest import modelsci
from tests.lm_models import tiny_causal_lm
from tests.models import write_manifest

PROMPT = "the bookcase is greenish today"
TARGET = " we like tea"


@pytest.fixture(scope="session")
def lm_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lms")
    return {arch: tiny_causal_lm(root / arch, arch) for arch in ("gpt2", "llama")}


@pytest.fixture(scope="session")
def lms(lm_folders: dict[str, Path]) -> dict[str, LoadedModel]:
    return {arch: load_model(resolve_model(ModelSpec(source=str(f), task="text-generation")), "cpu")
            for arch, f in lm_folders.items()}


def target_logprob(model: LoadedModel, prefix: list[int], target: list[int],
                   position_ids: list[int] | None = None) -> float:
    """log p(target | prefix) from the model's logits on prefix + target, computed here."""
    ids = torch.tensor([prefix + target])
    kwargs = {"position_ids": torch.tensor([position_ids])} if position_ids is not None else {}
    with torch.no_grad():
        logits = model.model(input_ids=ids, **kwargs).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(prefix) - 1 + k, t] for k, t in enumerate(target)))


def test_causal_lms_load_as_float32_and_refuse_remote_code_and_pickles(lm_folders: dict[str, Path],
                                                                       lms: dict[str, LoadedModel],
                                                                       tmp_path: Path) -> None:
    assert type(lms["gpt2"].model).__name__ == "GPT2LMHeadModel"
    assert type(lms["llama"].model).__name__ == "LlamaForCausalLM"
    assert lms["llama"].handle.instance.modality == "text" and lms["llama"].handle.instance.family == "llama"
    assert all(p.dtype == torch.float32 for p in lms["gpt2"].model.parameters())
    remote = tmp_path / "remote"
    shutil.copytree(lm_folders["gpt2"], remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "m.Model"}}))
    with pytest.raises(ModelError, match="auto_map"):
        resolve_model(ModelSpec(source=str(remote), task="text-generation"))
    pickled = tmp_path / "pickled"
    shutil.copytree(lm_folders["gpt2"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="refusing pickle-based weights"):
        resolve_model(ModelSpec(source=str(pickled), task="text-generation"))


def test_a_half_precision_lm_loads_as_float32_on_a_cpu(lm_folders: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(lm_folders["llama"], dtype=torch.float32).to(torch.bfloat16).save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(lm_folders["llama"] / name, half / name)
    model = load_model(resolve_model(ModelSpec(source=str(half), task="text-generation")), "cpu")
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}


def test_hub_id_from_the_cache(lm_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tiny--gpt2"
    shutil.copytree(lm_folders["gpt2"], repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    handle = resolve_model(ModelSpec(source="hf://tiny/gpt2", task="text-generation"))
    local = resolve_model(ModelSpec(source=str(lm_folders["gpt2"]), task="text-generation"))
    assert handle.instance.revision == sha and handle.id == local.id
    assert type(load_model(handle, "cpu").model).__name__ == "GPT2LMHeadModel"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_full_value_is_the_targets_logprob_and_shapley_is_efficient(lms: dict[str, LoadedModel], arch: str) -> None:
    model = lms[arch]
    masker = PromptMasker(model, PROMPT, TARGET, PromptOptions())
    # One player per word, though "bookcase" and "greenish" are several tokens each.
    assert masker.names == PROMPT.split()
    assert max(len(p) for p in masker.players) > 2
    ids = masker.ids[0].tolist()
    prefix, target = ids[:masker.prompt_length], ids[masker.prompt_length:]
    assert prefix[0] == model.tokenizer.bos_token_id
    assert target == model.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    game = GameEvaluator(masker)
    assert game.value_full == pytest.approx(target_logprob(model, prefix, target), abs=1e-5)
    mean = PromptMasker(model, PROMPT, TARGET, PromptOptions(value="mean"))
    assert mean.values(np.ones((1, 5), bool))[0] == pytest.approx(game.value_full / len(target), abs=1e-5)
    sv = shapley_interactions(game, masker.n_players, "SV", 1, 2 ** masker.n_players)
    assert sv.exact
    assert sv.singletons(masker.n_players).sum() == pytest.approx(game.value_full - game.value_empty, abs=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_removing_words_by_attention_mask_is_deleting_them(lms: dict[str, LoadedModel], arch: str) -> None:
    model = lms[arch]
    kept = PromptMasker(model, PROMPT, TARGET, PromptOptions(positions="kept"))
    contiguous = PromptMasker(model, PROMPT, TARGET, PromptOptions(positions="contiguous"))
    coalitions = all_coalitions(kept.n_players)[[0, 5, 10, 22, 30, 31]]  # the empty prompt included
    got_kept, got_contiguous = kept.values(coalitions), contiguous.values(coalitions)
    ids = kept.ids[0].tolist()
    p = kept.prompt_length
    for row, c_kept, c_cont in zip(coalitions, got_kept, got_contiguous):
        dropped = {t for player, on in zip(kept.players, row) if not on for t in player}
        stay = [i for i in range(p) if i not in dropped]
        prefix, target = [ids[i] for i in stay], ids[p:]
        assert c_cont == pytest.approx(target_logprob(model, prefix, target), abs=1e-5)
        positions = stay + list(range(p, len(ids)))
        assert c_kept == pytest.approx(target_logprob(model, prefix, target, positions), abs=1e-5)
    assert not np.allclose(got_kept, got_contiguous)  # the two position schemes do differ


def test_replacing_words_by_the_pad_token(lms: dict[str, LoadedModel]) -> None:
    model = lms["gpt2"]
    masker = PromptMasker(model, PROMPT, TARGET, PromptOptions(text_mode="mask", fill="pad"))
    row = np.array([True, False, True, False, True])
    ids = masker.ids[0].tolist()
    for player in (masker.players[1], masker.players[3]):
        for t in player:
            ids[t] = model.tokenizer.pad_token_id
    p = masker.prompt_length
    assert masker.values(row[None])[0] == pytest.approx(target_logprob(model, ids[:p], ids[p:]), abs=1e-5)


def test_integrated_gradients_on_the_embeddings_are_complete(lms: dict[str, LoadedModel]) -> None:
    """IG from the prompt with every word replaced by the pad token sums to the log-probability's change."""
    masker = PromptMasker(lms["llama"], PROMPT, TARGET, PromptOptions(text_mode="mask", fill="pad"))
    phi = masker.captum("integrated_gradients", 64)
    assert phi.shape == (5,)
    full, empty = masker.values(np.array([[True] * 5, [False] * 5]))
    assert phi.sum() == pytest.approx(full - empty, abs=1e-3)
    gxi = masker.captum("gradient_x_input", 1)
    assert gxi.shape == (5,) and not np.allclose(gxi, phi)


def test_greedy_target_and_chat_user_turn(lms: dict[str, LoadedModel]) -> None:
    model = lms["llama"]
    masker = PromptMasker(model, PROMPT, None, PromptOptions(max_new_tokens=3))
    assert masker.generated and len(masker.target_ids) == 3
    with torch.no_grad():
        out = model.model.generate(masker.ids[:, :masker.prompt_length], do_sample=False, max_new_tokens=3,
                                   pad_token_id=model.tokenizer.pad_token_id)
    assert masker.target_ids.tolist() == out[0, masker.prompt_length:].tolist()
    chat = PromptMasker(model, None, TARGET, PromptOptions(), messages=[
        {"role": "system", "content": "be kind"}, {"role": "user", "content": "the cat sat"}])
    assert chat.names == ["the", "cat", "sat"]
    assert chat.text.startswith("<|system|>be kind\n<|user|>the cat sat")


def independent_perplexity(model: LoadedModel, texts: list[str], context: int) -> float:
    """exp of the mean negative log-likelihood per predicted token, one document at a time."""
    total, count = 0.0, 0
    for text in texts:
        ids = ([model.tokenizer.bos_token_id] + model.tokenizer(text)["input_ids"])[:context]
        total += target_logprob(model, ids[:1], ids[1:])
        count += len(ids) - 1
    return float(np.exp(-total / count))


def _params(name: str) -> dict[str, object]:
    if name == "evaluation.performance":
        return {"n_bootstrap": 200, "batch_size": 2}  # both documents in one padded batch
    return {"examples": 2, "budget": 64, **({"n_steps": 16} if "gradients" in name else {})}


def test_every_analysis_through_the_cli(lm_folders: dict[str, Path], lms: dict[str, LoadedModel],
                                        tmp_path: Path) -> None:
    gpt2 = lms["gpt2"]
    first = PromptMasker(gpt2, "the cat sat", None, PromptOptions(max_new_tokens=2))
    greedy = gpt2.tokenizer.decode(first.target_ids)  # row 0's target is the model's own continuation
    texts = ["the sun is bright today and we like green tea", " ".join(["the cat sat on the mat"] * 12)]
    data = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"prompt": ["the cat sat", "we like green tea"], "target": [greedy, " today"],
                             "text": texts}), data)
    names = ["evaluation.performance", "attribution.shapley", "attribution.kernel_shap", "attribution.integrated_gradients",
             "attribution.gradient_x_input", "attribution.occlusion", "interactions.shapley",
             "interactions.weighted_banzhaf", "interactions.metagame"]
    manifest = write_manifest(tmp_path / "m.yaml", str(lm_folders["gpt2"]), task="text-generation",
                              dataset={"source": str(data)},
                              analyses=[{"name": n, "params": _params(n)} for n in names])
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat")
    cat = catalogue.open(tmp_path / "cat", create=True)
    performance = {r["kind"]: r for r in cat.sql("SELECT kind, value, metrics FROM findings_current WHERE "
                                                 "analysis_name = 'evaluation.performance'").to_pylist()}
    metrics = json.loads(performance["perplexity"]["metrics"])
    assert metrics["context"] == 64 and metrics["truncated"] == 1  # the second document is cut
    assert performance["perplexity"]["value"] == pytest.approx(independent_perplexity(gpt2, texts, 64), rel=1e-6)
    assert np.log(performance["perplexity"]["value"]) == pytest.approx(-performance["mean_log_likelihood"]["value"])
    assert performance["exact_match"]["value"] == 0.5  # the greedy row matches, " today" does not
    rows = cat.sql("SELECT analysis_name, kind, metrics FROM findings_current "
                   "WHERE subject = 'example:1' ORDER BY ALL").to_pylist()
    assert sorted({r["analysis_name"] for r in rows}) == sorted(names[1:])
    for r in rows:
        assert json.loads(r["metrics"])["target"] == " today", r
    path = cat.sql("SELECT a.path FROM artifacts a JOIN findings_current f ON f.id = a.finding_id WHERE "
                   "f.analysis_name = 'attribution.shapley' AND f.subject = 'example:0'").to_pylist()[0]["path"]
    assert pq.read_table(cat.root / path).column("name").to_pylist() == ["the", "cat", "sat"]
    # The model page shows example 0's attributions as tinted words.
    from modelsci.site_build import build_site, slug

    build_site(cat, tmp_path / "public")
    model_id = cat.sql("SELECT id FROM models").to_pylist()[0]["id"]
    page = (tmp_path / "public" / "models" / f"{slug(model_id)}.html").read_text()
    assert re.search(r'<span class="token"[^>]*>the</span> <span class="token"[^>]*>cat</span>', page)


def test_the_demo_modular_sum_model_shows_the_operands_interaction() -> None:
    """On the shipped modular-sum GPT-2: for at least 16 of 20 sums the operands' pair is the largest
    order-2 k-SII term, and one operand alone recovers under a tenth of what both give (median)."""
    from modelsci.resources import demo_inputs

    folder = demo_inputs() / "modsum_gpt2"
    model = load_model(resolve_model(ModelSpec(source=str(folder), task="text-generation")), "cpu")
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 10, size=(20, 2))
    top_is_operands, alone = 0, []
    for a, b in pairs:
        game = GameEvaluator(PromptMasker(model, f"{a} + {b} =", f" {(a + b) % 10}", PromptOptions()))
        assert game.names == [str(a), "+", str(b), "="]
        pairs_k = shapley_interactions(game, 4, "k-SII", 2, 16).of_order(2)
        top_is_operands += max(pairs_k, key=lambda k: abs(pairs_k[k])) == (0, 2)
        v = game(np.array([[0, 1, 0, 1], [1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]], bool))
        alone.append((max(v[1], v[2]) - v[0]) / (v[3] - v[0]))
    assert top_is_operands >= 16
    assert np.median(alone) < 0.1
