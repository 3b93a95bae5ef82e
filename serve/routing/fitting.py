"""Fitting a tenant's router on labelled examples: logistic regression or tuned thresholds.

Pure functions over already measured signals (see `calibration.py` for where they come from).
scikit-learn is imported here only, lazily: the gateway never loads it, since a fitted model is
stored as plain coefficients (`models.LogisticModel`).

Model choice: both candidates are scored by stratified k-fold cross-validation (each fold fits
on the others, so no example is judged by a model that saw it); logistic regression is kept
only when it beats the tuned thresholds, and never with fewer than `MIN_FOR_MODEL` examples or
a single label, where thresholds are the safer fit.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from serve.routing.models import (
    ADAPTER_PATHS,
    PATHS,
    DecisionModel,
    LogisticModel,
    ThresholdModel,
    allowed_paths,
    choose,
)
from serve.routing.signals import Signals

MIN_FOR_MODEL = 20  # fewer labelled examples than this: tune the two thresholds only
MAX_FOLDS = 5
C = 1.0  # inverse L2 strength on standardised features; the default, robust on a few hundred
GRID_ADAPTER = [round(0.2 + 0.025 * i, 3) for i in range(29)]  # 0.2 .. 0.9
GRID_RAG = [round(0.2 + 0.025 * i, 3) for i in range(31)]  # 0.2 .. 0.95


@dataclass
class Labelled:
    """One example's signals and its label (`adapter` optional for the adapter paths)."""

    signals: Signals
    route: str
    adapter: str | None = None


@dataclass(frozen=True)
class Rules:
    """What the policy lets auto choose from, as `choose()` needs it."""

    routes: tuple[str, ...] = PATHS
    base_allowed: bool = True

    def allowed(self, s: Signals) -> list[str]:
        """Paths auto may take for these signals."""
        return allowed_paths(list(self.routes), self.base_allowed, s.task.best is not None)


def decide_one(model: DecisionModel, s: Signals, rules: Rules) -> tuple[str | None, str | None]:
    """(route, adapter name) the router would pick; (None, None) when nothing is allowed."""
    choice = choose(model.path_scores(s), rules.allowed(s))
    if choice is None:
        return None, None
    adapter = s.task.best.name if choice.route in ADAPTER_PATHS and s.task.best else None
    return choice.route, adapter


def is_right(pred: tuple[str | None, str | None], ex: Labelled) -> bool:
    """Right path, and the right adapter where the label names one."""
    route, adapter = pred
    if route != ex.route:
        return False
    return route not in ADAPTER_PATHS or ex.adapter is None or adapter == ex.adapter


@dataclass
class Evaluation:
    """Accuracy, macro-F1 over paths, and the confusion matrix (rows: label, columns: pick)."""

    accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    n: int
    order: list[str] = field(default_factory=lambda: list(PATHS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "confusion": self.confusion,
            "n": self.n,
            "order": self.order,
        }


def evaluate(
    preds: Sequence[tuple[str | None, str | None]], data: Sequence[Labelled]
) -> Evaluation:
    """Score predictions against labels. A path nothing was allowed for counts as 'prompt'."""
    index = {p: i for i, p in enumerate(PATHS)}
    confusion = [[0] * len(PATHS) for _ in PATHS]
    right = 0
    for pred, ex in zip(preds, data, strict=True):
        confusion[index[ex.route]][index[pred[0] or "prompt"]] += 1
        right += is_right(pred, ex)
    f1s = []
    for i, _ in enumerate(PATHS):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        if support == 0:
            continue  # macro-F1 over the paths the labels use
        precision = tp / predicted if predicted else 0.0
        recall = tp / support
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    n = len(data)
    return Evaluation(
        accuracy=round(right / n, 4) if n else 0.0,
        macro_f1=round(sum(f1s) / len(f1s), 4) if f1s else 0.0,
        confusion=confusion,
        n=n,
    )


def feature_names() -> list[str]:
    """The features a logistic model is fitted on (all of `Signals.features()`)."""
    return list(Signals().features())


def fit_logistic(data: Sequence[Labelled], c: float = C) -> LogisticModel:
    """Multinomial logistic regression on standardised features, balanced class weights."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    names = feature_names()
    x = np.array([[ex.signals.features()[n] for n in names] for ex in data], dtype=float)
    y = [ex.route for ex in data]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    clf.fit((x - mean) / scale, y)
    return LogisticModel(
        features=tuple(names),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        classes=tuple(str(k) for k in clf.classes_),
        coef=tuple(tuple(float(w) for w in row) for row in clf.coef_),
        intercept=tuple(float(b) for b in clf.intercept_),
    )


def tune_thresholds(
    data: Sequence[Labelled], rules: Rules, prefer: ThresholdModel | None = None
) -> ThresholdModel:
    """The pair of thresholds with the best accuracy on `data` (grid search); ties go to the
    pair nearest `prefer` (the policy's), so scarce data moves the thresholds no more than
    it must."""
    import numpy as np

    prefer = prefer or ThresholdModel()
    sim = np.array([ex.signals.task.similarity for ex in data])
    top = np.array([ex.signals.retrieval_top for ex in data])
    has = np.array([ex.signals.task.best is not None for ex in data])
    label = np.array([PATHS.index(ex.route) for ex in data])
    best_adapter = [ex.signals.task.best.name if ex.signals.task.best else None for ex in data]
    adapter_ok = np.array(
        [ex.adapter is None or ex.adapter == best_adapter[i] for i, ex in enumerate(data)]
    )
    mask = np.array([[p in rules.allowed(ex.signals) for p in PATHS] for ex in data])
    best_key: tuple[float, float] | None = None
    best = prefer
    for a_thr in GRID_ADAPTER:
        a = np.where(has, sim - a_thr, -1.0)
        for r_thr in GRID_RAG:
            r = top - r_thr
            margins = np.stack([-a - r, -a + r, a - r, a + r], 1)
            margins = np.where(mask, margins, -np.inf)
            pick = margins.argmax(axis=1)  # first maximum: the cheaper path wins ties
            right = (pick == label) & ((label < 2) | adapter_ok)
            acc = float(right.mean()) if len(data) else 0.0
            distance = abs(a_thr - prefer.adapter_min_similarity) + abs(
                r_thr - prefer.rag_min_score
            )
            key = (acc, -distance)
            if best_key is None or key > best_key:
                best_key, best = key, ThresholdModel(a_thr, r_thr)
    return best


def folds(labels: Sequence[str], seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Stratified k-fold splits (k = 2..5, by the rarest label); [] when too few examples."""
    from collections import Counter

    from sklearn.model_selection import StratifiedKFold

    counts = Counter(labels)
    k = max(2, min(MAX_FOLDS, min(counts.values()))) if counts else 0
    if len(labels) < 2 * k or k < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a label rarer than k only warns
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [
            (list(tr), list(te)) for tr, te in splitter.split([[0]] * len(labels), list(labels))
        ]


@dataclass
class Fit:
    """The chosen model, its cross-validated evaluation, and every candidate's accuracy."""

    model: DecisionModel
    evaluation: Evaluation
    candidates: dict[str, float]
    folds: int


def cross_validate(
    data: Sequence[Labelled], rules: Rules, kind: str, prefer: ThresholdModel
) -> tuple[Evaluation, int]:
    """Out-of-fold predictions of a candidate `kind`, and the number of folds."""
    splits = folds([ex.route for ex in data])
    if not splits:
        return evaluate([(None, None)] * len(data), data), 0
    preds: list[tuple[str | None, str | None]] = [(None, None)] * len(data)
    for train, test in splits:
        part = [data[i] for i in train]
        model: DecisionModel
        if kind == "logistic" and len({ex.route for ex in part}) > 1:
            model = fit_logistic(part)
        else:
            model = tune_thresholds(part, rules, prefer)
        for i in test:
            preds[i] = decide_one(model, data[i].signals, rules)
    return evaluate(preds, data), len(splits)


def fit(data: Sequence[Labelled], rules: Rules, prefer: ThresholdModel) -> Fit:
    """Choose between logistic regression and tuned thresholds by cross-validated accuracy,
    then refit the winner on every example."""
    kinds = ["thresholds"]
    if len(data) >= MIN_FOR_MODEL and len({ex.route for ex in data}) > 1:
        kinds.append("logistic")
    results = {k: cross_validate(data, rules, k, prefer) for k in kinds}
    candidates = {k: ev.accuracy for k, (ev, _) in results.items()}
    winner = "thresholds"
    if "logistic" in results and results["logistic"][0].accuracy > candidates["thresholds"]:
        winner = "logistic"
    model: DecisionModel = (
        fit_logistic(data) if winner == "logistic" else tune_thresholds(data, rules, prefer)
    )
    evaluation, k = results[winner]
    return Fit(model, evaluation, candidates, k)
