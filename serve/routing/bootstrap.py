"""A starter golden set from what a tenant already has, for `router calibrate --bootstrap`.

- adapter: each adapter's exemplar prompts (recorded at registration), and held-out prompts
  (test and validation splits) of a prepared dataset given for it, whose digest must match
  the one in the adapter's lineage;
- rag: questions made from the tenant's documents with templates (a topic from a sentence:
  an identifier such as a product code, else the sentence's subject);
- prompt: a shipped set of general chat prompts (`general.py`);
- combined: an adapter prompt that also asks for a document fact.

The labels are guesses by construction, good enough to start from and meant to be reviewed
(`--save-golden FILE` writes them out). Calibration never compares a prompt with the exemplar
it was made from.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from adapters.registry import AdapterVersion
from retrieval.search import IDENTIFIER_RE
from serve.errors import ServiceError
from serve.routing.calibration import Example
from serve.routing.general import GENERAL_PROMPTS

PER_PATH = 24  # examples per path at most: enough for 5-fold cross-validation to mean something

QUESTION_TEMPLATES = (
    "What does the documentation say about {t}?",
    "Can you tell me about {t}?",
    "What should I know about {t}?",
    "Remind me of the details for {t}.",
    "What are the facts on {t}?",
    "Look up {t} for me, please.",
    "I have a question about {t}: what applies?",
)
COMBINED_TEMPLATES = (
    "{p} Also, {q_lower}",
    "{p} And use our documents for this: {q}",
    "{q} Then: {p}",
)
VERBS = {
    "is",
    "are",
    "was",
    "were",
    "costs",
    "cost",
    "has",
    "have",
    "can",
    "must",
    "will",
    "may",
    "ships",
    "ship",
    "opens",
    "open",
    "closes",
    "close",
    "takes",
    "take",
    "lasts",
    "runs",
    "includes",
    "include",
    "requires",
    "require",
    "covers",
    "starts",
    "ends",
    "offers",
    "accepts",
    "applies",
    "should",
    "needs",
    "gets",
    "uses",
    "comes",
}
LEADING = {"the", "a", "an", "our", "your", "this", "that", "each", "every", "all"}
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")


def topic(sentence: str) -> str | None:
    """What a sentence is about: an identifier in it, else the words before its first verb."""
    # Codes such as SKU-4471 or LT-2231 (an upper-case letter: not "2-year" or "24h").
    ids = [m for m in IDENTIFIER_RE.findall(sentence) if len(m) >= 3 and m.lower() != m]
    if ids:
        return ids[0]
    words = re.findall(r"[\w'-]+", sentence)
    for i, w in enumerate(words):
        if w.lower() in VERBS and i > 0:
            subject = words[:i]
            while subject and subject[0].lower() in LEADING:
                subject = subject[1:]
            if 1 <= len(subject) <= 7:
                return "the " + " ".join(subject)
            return None
    return None


def doc_questions(texts: Sequence[str], rng: random.Random, n: int) -> list[str]:
    """Up to `n` template questions about topics in the documents' sentences."""
    topics: list[str] = []
    for text in texts:
        for sentence in SENTENCE_RE.split(text):
            sentence = sentence.strip().lstrip("#").strip()
            if len(sentence.split()) < 5:
                continue
            t = topic(sentence)
            if t and t.lower() not in {x.lower() for x in topics}:
                topics.append(t)
    rng.shuffle(topics)
    return [rng.choice(QUESTION_TEMPLATES).format(t=t) for t in topics[:n]]


def dataset_prompts(directory: Path, av: AdapterVersion) -> list[str]:
    """Held-out prompts (test, then validation split) of a prepared dataset for `av`."""
    manifest_path = Path(directory) / "manifest.json"
    if not manifest_path.is_file():
        raise ServiceError(
            f"{directory} is not a prepared dataset (no manifest.json)", "invalid_dataset"
        )
    digest = json.loads(manifest_path.read_text()).get("dataset_digest")
    if av.dataset_digest and digest != av.dataset_digest:
        raise ServiceError(
            f"{directory} is not the dataset {av.ref} was trained on (digest {str(digest)[:12]} "
            f"vs {av.dataset_digest[:12]} in its lineage)",
            "dataset_mismatch",
            "conflict",
        )
    prompts: list[str] = []
    for split in ("test", "validation"):
        path = Path(directory) / f"{split}.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            users = [m["content"] for m in row.get("messages", []) if m.get("role") == "user"]
            text = users[-1] if users else row.get("prompt")
            if isinstance(text, str) and text.strip():
                prompts.append(text.strip())
    return prompts


def bootstrap_examples(
    adapters: Sequence[AdapterVersion],
    documents: Sequence[str],
    *,
    datasets: dict[str, Path] | None = None,
    per_path: int = PER_PATH,
    seed: int = 0,
) -> list[Example]:
    """A labelled starter set from the tenant's adapters and document texts (see the module)."""
    rng = random.Random(seed)
    adapter_prompts: list[tuple[str, str]] = []  # (adapter name, prompt)
    for av in adapters:
        prompts = list(av.exemplars)
        if datasets and av.name in datasets:
            prompts += dataset_prompts(datasets[av.name], av)
        adapter_prompts += [(av.name, p) for p in dict.fromkeys(prompts)]
    rng.shuffle(adapter_prompts)
    questions = doc_questions(documents, rng, 2 * per_path)
    out: list[Example] = []
    for name, p in adapter_prompts[:per_path]:
        out.append(Example(p, "adapter", name, source="bootstrap"))
    for q in questions[:per_path]:
        out.append(Example(q, "rag", source="bootstrap"))
    general = list(GENERAL_PROMPTS)
    rng.shuffle(general)
    out += [Example(p, "prompt", source="bootstrap") for p in general[:per_path]]
    if adapter_prompts and questions:
        # Combined prompts reuse the adapter prompts and the questions not used above, so a
        # prompt never appears under two labels.
        spare_q = questions[per_path:] or questions
        for i in range(min(per_path, len(adapter_prompts))):
            name, p = adapter_prompts[i]
            q = spare_q[i % len(spare_q)]
            template = rng.choice(COMBINED_TEMPLATES)
            text = template.format(p=p, q=q, q_lower=q[0].lower() + q[1:])
            out.append(Example(text, "combined", name, source="bootstrap", leave_out=(p,)))
    return out


def document_texts(retrieval: object, tenant: str, limit: int = 500) -> list[str]:
    """Chunk texts of the tenant's collection (at most `limit`; [] without documents).

    Reads through the retrieval service's store: a read, no change to the collection.
    """
    store = getattr(retrieval, "store", None)
    embedder = getattr(retrieval, "embedder", None)
    if store is None or embedder is None:
        return []
    col = store.collection(tenant, embedder.name, create=False)
    if col is None:
        return []
    return [t for t in (col.get(include=["documents"], limit=limit)["documents"] or []) if t]
