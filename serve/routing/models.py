"""Decision models: from a request's signals to a score per path, and the best allowed path.

Two kinds, both stored as plain JSON (never pickles: a database row must not be able to run
code in the gateway):

- `ThresholdModel`: today's rule. An adapter when its exemplar similarity reaches a threshold,
  documents when retrieval relevance reaches another; both give combined, neither prompt.
  Scores are a softmax over each path's signed margins to the thresholds, so the path the rule
  picks always has the highest score and the runner-up is the one the rule nearly picked.
- `LogisticModel`: multinomial logistic regression over `Signals.features()`, fitted per tenant
  by `loraplex router calibrate`; scores are its class probabilities.

`choose()` applies the tenant's policy: the best path among those allowed, and what it stood in
for when the preferred one is not allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from serve.routing.signals import Signals

PATHS = ("prompt", "rag", "adapter", "combined")  # cheapest first: ties go to the cheaper path
ADAPTER_PATHS = ("adapter", "combined")
THRESHOLD_TEMPERATURE = 0.05  # margins of ~0.1 around a threshold give clearly unequal scores


class DecisionModel(Protocol):
    """Scores the four paths for a request's signals."""

    @property
    def kind(self) -> str:
        """ "thresholds" or "logistic": how `params` are read back."""
        ...

    def path_scores(self, signals: Signals) -> dict[str, float]:
        """A score per path in [0, 1], summing to 1; higher is better."""
        ...

    def to_params(self) -> dict[str, Any]:
        """JSON-ready parameters, enough for `load_model` to rebuild the model."""
        ...


def _softmax(logits: dict[str, float]) -> dict[str, float]:
    top = max(logits.values())
    exp = {k: math.exp(v - top) for k, v in logits.items()}
    total = sum(exp.values())
    return {k: exp[k] / total for k in logits}


@dataclass(frozen=True)
class ThresholdModel:
    """Two thresholds: exemplar similarity for an adapter, retrieval relevance for documents."""

    adapter_min_similarity: float = 0.45
    rag_min_score: float = 0.5
    kind: str = "thresholds"

    def path_scores(self, signals: Signals) -> dict[str, float]:
        """Softmax over signed margins: each path adds its two margins, with the sign that path
        needs (an adapter path wants similarity above its threshold, a document path
        relevance above its own), so the rule's pick always scores highest."""
        a = signals.task.similarity - self.adapter_min_similarity
        r = signals.retrieval_top - self.rag_min_score
        if signals.task.best is None:
            a = -1.0  # no adapter with exemplars: nothing to match
        margins = {"prompt": -a - r, "rag": -a + r, "adapter": a - r, "combined": a + r}
        return _softmax({p: m / THRESHOLD_TEMPERATURE for p, m in margins.items()})

    def to_params(self) -> dict[str, Any]:
        """The two thresholds."""
        return {
            "adapter_min_similarity": self.adapter_min_similarity,
            "rag_min_score": self.rag_min_score,
        }


@dataclass(frozen=True)
class LogisticModel:
    """Multinomial logistic regression on standardised features (coefficients as JSON)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    classes: tuple[str, ...]
    coef: tuple[tuple[float, ...], ...]  # one row per class (one row for two classes)
    intercept: tuple[float, ...]
    kind: str = "logistic"

    def logits(self, signals: Signals) -> dict[str, float]:
        """Each class's linear score."""
        values = signals.features()
        z = [
            (values.get(name, 0.0) - m) / (s or 1.0)
            for name, m, s in zip(self.features, self.mean, self.scale, strict=True)
        ]
        rows = [sum(w * x for w, x in zip(row, z, strict=True)) for row in self.coef]
        out = [r + b for r, b in zip(rows, self.intercept, strict=True)]
        if len(self.classes) == 2 and len(out) == 1:
            # scikit-learn's binary form: one row that scores the second class against the first.
            return {self.classes[0]: 0.0, self.classes[1]: out[0]}
        return dict(zip(self.classes, out, strict=True))

    def path_scores(self, signals: Signals) -> dict[str, float]:
        """Class probabilities; paths the model never saw in its labels score 0."""
        probs = _softmax(self.logits(signals)) if len(self.classes) > 1 else {self.classes[0]: 1.0}
        return {p: probs.get(p, 0.0) for p in PATHS}

    def to_params(self) -> dict[str, Any]:
        """Feature names, standardisation, classes and coefficients."""
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "classes": list(self.classes),
            "coef": [list(r) for r in self.coef],
            "intercept": list(self.intercept),
        }


def load_model(kind: str, params: dict[str, Any]) -> DecisionModel:
    """Rebuild a stored model from its kind and parameters."""
    if kind == "thresholds":
        return ThresholdModel(
            float(params["adapter_min_similarity"]), float(params["rag_min_score"])
        )
    if kind == "logistic":
        return LogisticModel(
            features=tuple(params["features"]),
            mean=tuple(float(x) for x in params["mean"]),
            scale=tuple(float(x) for x in params["scale"]),
            classes=tuple(params["classes"]),
            coef=tuple(tuple(float(x) for x in row) for row in params["coef"]),
            intercept=tuple(float(x) for x in params["intercept"]),
        )
    raise ValueError(f"unknown router model kind {kind!r}")


@dataclass(frozen=True)
class Choice:
    """The path picked, its score, and the path preferred before the policy had its say."""

    route: str
    score: float
    preferred: str
    preferred_score: float

    @property
    def fell_back(self) -> bool:
        """Whether the policy kept the preferred path from being taken."""
        return self.route != self.preferred


def ranked(scores: dict[str, float]) -> list[str]:
    """Paths by score, best first; ties go to the cheaper path."""
    return sorted(PATHS, key=lambda p: (-scores.get(p, 0.0), PATHS.index(p)))


def choose(scores: dict[str, float], allowed: list[str]) -> Choice | None:
    """The best allowed path (None when nothing is allowed)."""
    order = ranked(scores)
    best = next((p for p in order if p in allowed), None)
    if best is None:
        return None
    return Choice(best, scores.get(best, 0.0), order[0], scores.get(order[0], 0.0))


def allowed_paths(
    routes: Sequence[str], base_allowed: bool, has_adapter: bool, adapter_named: bool = False
) -> list[str]:
    """Paths auto may take: the policy's routes, the base model's paths only where the base
    model is allowed and no adapter was named, the adapter paths only with an adapter."""
    out = []
    for p in PATHS:
        if p not in routes:
            continue
        if p in ADAPTER_PATHS and not has_adapter:
            continue
        if p not in ADAPTER_PATHS and (not base_allowed or adapter_named):
            continue
        out.append(p)
    return out
