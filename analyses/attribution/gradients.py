"""Captum attributions on PyTorch models: ``attribution.integrated_gradients``,
``attribution.gradient_x_input`` and ``attribution.occlusion``.

Integrated gradients use Gauss-Legendre quadrature: Captum's ``riemann_trapezoid`` weights sum
to (n-1)/n and shrink every attribution by that factor. Image attributions are summed over the
cells of the patch grid, so every method reports on the same players as the Shapley analyses
and is judged by the same deletion and insertion curves.

These methods are deterministic, so they take no seed: what would draw random numbers (the
background rows of the ``marginal`` baseline, the held-out coalitions of ``r2``, the bootstrap
of feature importances) draws them from a generator seeded with 0 whatever the run's seed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from modelsci.analyses.attribution.report import ATTRIBUTION_KINDS, ExampleAttribution, add_attribution_findings
from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.games.inputs import ExplainParams, games_for, image_shape
from modelsci.analyses.games.prompt_game import PromptMasker
from modelsci.schemas.entities import Pillar

__all__ = ["GradientXInput", "IntegratedGradients", "Occlusion", "captum_attributions", "text_attributions"]


class GradientParams(ExplainParams):
    n_steps: int = Field(default=64, ge=1, description="Integrated gradients: Gauss-Legendre nodes.")


def _forward(module: torch.nn.Module, target: int | None):  # noqa: ANN202 - a closure for Captum
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        if target is None:
            return out.reshape(len(out))
        if out.shape[1] == 1:  # one logit: a binary classifier
            p = torch.sigmoid(out[:, 0])
            return p if target == 1 else 1 - p
        return torch.softmax(out, 1)[:, target]
    return forward


def captum_attributions(module: torch.nn.Module, x: np.ndarray, baseline: np.ndarray, method: str,
                        target: int | None, *, n_steps: int = 64,
                        window: tuple[int, ...] | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Attributions of one flat input row by a Captum method, as float64."""
    import captum.attr as ca

    param = next(module.parameters())
    inputs = torch.tensor(x, dtype=param.dtype, device=param.device)[None]
    base = torch.tensor(baseline, dtype=param.dtype, device=param.device)[None]
    if shape is not None:
        inputs, base = inputs.reshape(1, *shape), base.reshape(1, *shape)
    forward = _forward(module, target)
    if method == "integrated_gradients":
        attr = ca.IntegratedGradients(forward).attribute(inputs, baselines=base, n_steps=n_steps,
                                                         method="gausslegendre")
    elif method == "gradient_x_input":
        attr = ca.InputXGradient(forward).attribute(inputs)
    elif method == "occlusion":
        attr = ca.Occlusion(forward).attribute(inputs, sliding_window_shapes=window or (1,),
                                               strides=window or (1,), baselines=base)
    else:
        raise ValueError(f"unknown Captum method {method!r}")
    return attr.detach().double().cpu().numpy().reshape(-1)


class _CaptumAnalysis(AnalysisPlugin):
    version = "1"
    family = "attribution"
    pillar = Pillar.explore
    Params = GradientParams
    tasks = frozenset({"tabular-classification", "tabular-regression", "image-classification", "text-classification",
                       "text-generation"})
    frameworks = frozenset({"torch", "transformers"})
    method: ClassVar[str]
    label: ClassVar[str]
    seed_dependent = False
    seed_use = ("the method is deterministic; the marginal baseline's background rows, the r2 coalitions and the "
                "bootstrap are drawn with seed 0 whatever the run's seed")
    kinds = ATTRIBUTION_KINDS

    @staticmethod
    def _rng() -> np.random.Generator:
        """The generator of every random draw: fixed, so that the run's seed changes nothing."""
        return np.random.default_rng(0)

    def run(self, ctx: RunContext) -> None:
        params: GradientParams = ctx.params  # type: ignore[assignment]
        if ctx.model.handle.framework == "transformers":
            return self._run_text(ctx, params)
        module = ctx.model.model
        x = ctx.dataset.features()
        shape = image_shape(ctx.model, params) if ctx.model.task == "image-classification" else None
        rng = self._rng()
        results, games = [], {}
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, rng)):
            masker: Any = game.masker
            if shape is not None:
                baseline = masker.baseline.reshape(-1)
                window = (shape[0], params.patch, params.patch)
            else:
                baseline = masker.background.mean(0) if params.baseline != "marginal" else x.mean(0)
                window = (1,)
            pixels = captum_attributions(module, x[example], baseline, self.method, masker.target,
                                         n_steps=params.n_steps, window=window, shape=shape)
            if shape is not None:
                if self.method == "occlusion":  # each pixel holds its window's whole effect: average, not sum
                    pixels = pixels / (params.patch * params.patch * shape[0])
                cells = masker.pixel_mask(np.eye(game.n_players, dtype=bool)).reshape(game.n_players, -1)
                phi = cells.astype(np.float64) @ pixels
            else:
                phi = pixels
            results.append(ExampleAttribution.of(example, game, phi, rng))
            games[example] = game
            ctx.progress(done + 1, params.examples)
        add_attribution_findings(ctx, self.label, results, games, self._rng())


    def _run_text(self, ctx: RunContext, params: GradientParams) -> None:
        """Tokens as players: Captum's layer methods on the input embeddings, summed per token.

        The baseline input replaces every player token by the mask token (``text_mode: mask``)
        or the pad token; occlusion drops one token at a time through the same masker as the games.
        """
        rng = self._rng()
        results, games = [], {}
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, rng)):
            masker: Any = game.masker
            if self.method == "occlusion":
                without = ~np.eye(game.n_players, dtype=bool)
                phi = game.value_full - game(without)
            elif isinstance(masker, PromptMasker):
                phi = masker.captum(self.method, params.n_steps)
            else:
                phi = text_attributions(masker, self.method, params.n_steps, params.text_mode)
            results.append(ExampleAttribution.of(example, game, phi, rng))
            games[example] = game
            ctx.progress(done + 1, params.examples)
        add_attribution_findings(ctx, self.label, results, games, self._rng())


def text_attributions(masker: Any, method: str, n_steps: int, text_mode: str) -> np.ndarray:
    """Per-player attributions of a text classifier by a Captum layer method on its embeddings."""
    import captum.attr as ca

    model = masker.model.model
    tokenizer = masker.model.tokenizer
    encoding = masker.encoding
    target = masker.target

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.softmax(logits, -1)[:, target] if target is not None else logits[:, 0]

    ids, mask = encoding["input_ids"], encoding["attention_mask"]
    baseline = ids.clone()
    fill = tokenizer.mask_token_id if text_mode == "mask" and tokenizer.mask_token_id is not None else tokenizer.pad_token_id
    baseline[0, masker.positions] = fill
    layer = model.get_input_embeddings()
    if method == "integrated_gradients":
        attr = ca.LayerIntegratedGradients(forward, layer).attribute(
            ids, baselines=baseline, additional_forward_args=(mask,), n_steps=n_steps, method="gausslegendre")
    elif method == "gradient_x_input":
        attr = ca.LayerGradientXActivation(forward, layer).attribute(ids, additional_forward_args=(mask,))
    else:
        raise ValueError(f"unknown text method {method!r}")
    per_token = attr.detach().double().sum(-1)[0].cpu().numpy()
    return per_token[masker.positions]


class IntegratedGradients(_CaptumAnalysis):
    name = "attribution.integrated_gradients"
    method = "integrated_gradients"
    label = "integrated gradients"
    description = ("Integrated gradients (Captum, Gauss-Legendre quadrature) from the baseline to the "
                   "input; complete: attributions sum to f(x) - f(baseline).")


class GradientXInput(_CaptumAnalysis):
    name = "attribution.gradient_x_input"
    method = "gradient_x_input"
    label = "gradient x input"
    description = "Gradient times input (Captum InputXGradient): a first-order estimate with a zero baseline."


class Occlusion(_CaptumAnalysis):
    name = "attribution.occlusion"
    method = "occlusion"
    label = "occlusion"
    description = "Occlusion (Captum): the output's drop when one feature (or patch) takes the baseline."

