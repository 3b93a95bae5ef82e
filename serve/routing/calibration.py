"""Calibrating a tenant's router on labelled examples, storing it as a version, rolling back.

Examples come from hand-labelled golden sets (JSONL: `{"prompt" or "messages", "route",
"adapter"?}`), from the per-path evaluation's `best_paths.jsonl` (`{"prompt" or "messages",
"route", "scores", ...}`), or from `bootstrap.py`'s starter set. Each is measured exactly as a
live request would be (`Router.auto_signals`), with one difference: a labelled prompt is not
compared with an exemplar identical to it (nor with the exemplar it was built from), or the
fit would learn from a similarity of 1.0 that live traffic never shows.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.errors import ServiceError
from serve.routing.fitting import Evaluation, Fit, Labelled, Rules, decide_one, evaluate, fit
from serve.routing.models import PATHS, ThresholdModel
from serve.routing.router import Router
from serve.routing.versions import RouterVersion, RouterVersions
from serve.tenants import Tenant


@dataclass
class Example:
    """A labelled prompt: the path that serves it best, and optionally which adapter."""

    prompt: str
    route: str
    adapter: str | None = None
    turns: int = 1
    source: str = "golden"
    leave_out: tuple[str, ...] = ()  # exemplars this prompt was made from

    def to_dict(self) -> dict[str, Any]:
        """The golden-set line for this example."""
        out: dict[str, Any] = {"prompt": self.prompt, "route": self.route}
        if self.adapter:
            out["adapter"] = self.adapter
        return out


def _bad(where: str, message: str) -> ServiceError:
    return ServiceError(f"{where}: {message}", "invalid_golden_set")


def parse_example(data: Any, where: str, source: str) -> Example:
    """One golden-set or best-paths line as an Example (a ServiceError naming the line)."""
    if not isinstance(data, dict):
        raise _bad(where, "each line must be a JSON object")
    route = data.get("route")
    if route not in PATHS:
        raise _bad(where, f"'route' must be one of {', '.join(PATHS)}; got {route!r}")
    prompt, turns = data.get("prompt"), 1
    messages = data.get("messages")
    if not isinstance(prompt, str) and isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        turns = max(len(users), 1)
        prompt = users[-1].get("content") if users else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise _bad(where, "needs a non-empty 'prompt' (or a user message in 'messages')")
    adapter = data.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise _bad(where, "'adapter' must be an adapter name")
    return Example(prompt.strip(), route, adapter or None, turns, source)


def read_examples(path: Path, source: str = "golden") -> list[Example]:
    """Examples from a JSONL file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ServiceError(f"{path} does not exist", "golden_set_missing", "not_found")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(f"{path.name} line {number}", f"not valid JSON ({exc.msg})") from None
        out.append(parse_example(data, f"{path.name} line {number}", source))
    return out


def read_best_paths(directory: Path) -> list[Example]:
    """The per-path evaluation's best path per question (`DIR/best_paths.jsonl`)."""
    path = Path(directory) / "best_paths.jsonl"
    if not path.is_file():
        raise ServiceError(
            f"{directory} has no best_paths.jsonl: run the per-path evaluation "
            "(`loraplex eval --tenant T --questions QA.jsonl --out DIR`) first",
            "best_paths_missing",
            "not_found",
        )
    return read_examples(path, source="eval")


def write_examples(path: Path, examples: list[Example]) -> None:
    """Save examples as a golden set a person can review and edit."""
    lines = [json.dumps(ex.to_dict(), ensure_ascii=False) for ex in examples]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class CalibrationResult:
    """Before and after, and the stored version (None on a dry run)."""

    tenant: str
    examples: int
    labels: dict[str, int]
    sources: dict[str, int]
    before_version: str
    before: Evaluation
    after: Evaluation
    kind: str
    candidates: dict[str, float]
    folds: int
    not_allowed: int
    version: RouterVersion | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """What is stored with the version (`router_versions.report`)."""
        return {
            "examples": self.examples,
            "labels": self.labels,
            "sources": self.sources,
            "folds": self.folds,
            "not_allowed": self.not_allowed,
            "before": {"version": self.before_version, **self.before.to_dict()},
            "after": {"kind": self.kind, "cross_validated": True, **self.after.to_dict()},
            "candidates": self.candidates,
        }


class Calibration:
    """Fit, store and roll back per-tenant routers."""

    def __init__(self, router: Router, versions: RouterVersions) -> None:
        self.router = router
        self.versions = versions

    def measure(self, tenant: Tenant, examples: list[Example]) -> list[Labelled]:
        """Each example's signals, as the router would measure the live request."""
        out = []
        for ex in examples:
            s = self.router.auto_signals(
                tenant, ex.prompt, turns=ex.turns, leave_out={ex.prompt, *ex.leave_out}
            )
            out.append(Labelled(s, ex.route, ex.adapter))
        return out

    def calibrate(
        self, tenant: Tenant, examples: list[Example], store: bool = True
    ) -> CalibrationResult:
        """Measure, compare the current router with a fitted one, store the fit as a version."""
        if not examples:
            raise ServiceError(
                "no labelled examples: give a golden set, --from-eval DIR or --bootstrap",
                "no_examples",
            )
        data = self.measure(tenant, examples)
        rules = Rules(
            tuple(tenant.policy.routes), tenant.policy.allows_base(self.router.base_model)
        )
        label, current = self.router.model_for(tenant, fresh=True)
        before = evaluate([decide_one(current, ex.signals, rules) for ex in data], data)
        policy = tenant.policy
        prefer = ThresholdModel(policy.adapter_min_similarity, policy.rag_min_score)
        fitted: Fit = fit(data, rules, prefer)
        not_allowed = sum(ex.route not in rules.allowed(ex.signals) for ex in data)
        result = CalibrationResult(
            tenant=tenant.name,
            examples=len(data),
            labels=dict(Counter(ex.route for ex in data)),
            sources=dict(Counter(ex.source for ex in examples)),
            before_version=label,
            before=before,
            after=fitted.evaluation,
            kind=fitted.model.kind,
            candidates=fitted.candidates,
            folds=fitted.folds,
            not_allowed=not_allowed,
            params=fitted.model.to_params(),
        )
        if store:
            result.version = self.versions.add(
                tenant.name, fitted.model.kind, result.params, result.report()
            )
            self.router.invalidate(tenant.id)
        return result

    def rollback(self, tenant: Tenant) -> RouterVersion | None:
        """Back to the previous version (None: the policy's thresholds)."""
        back = self.versions.rollback(tenant.name)
        self.router.invalidate(tenant.id)
        return back
