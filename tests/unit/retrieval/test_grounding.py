"""Coverage, citations and the grounding score on crafted answers."""

from __future__ import annotations

from retrieval.grounding import (
    cited_sources,
    coverage,
    facts,
    grounding,
    key_terms,
    longest_common_span,
)
from retrieval.prompt import Source
from retrieval.search import Hit

KETTLE = Source(
    1,
    "k",
    "cat.md",
    "cat.md",
    "Catalogue",
    "Catalogue > Zorvik kettle",
    "- Product code: SKU-38407\n- Price: 37.50 euros\n- Weight: 1.2 kg\n- Made in: Chile",
    1.0,
    0.66,
)
HOURS = Source(
    2,
    "h",
    "pol.md",
    "pol.md",
    "Policies",
    "Policies > Opening hours",
    "Monday to Friday: 09:30 to 18:30. Saturday: 10:00 to 16:00. Sunday: closed.",
    0.5,
    0.4,
)


def hit(text: str, relevance: float, heading: str = "") -> Hit:
    return Hit(
        id="x",
        doc_id="x",
        source="x.md",
        title="X",
        text=text,
        score=1.0,
        relevance=relevance,
        metadata={"heading": heading},
    )


def test_coverage_needs_relevance_and_the_names_asked_about() -> None:
    hits = [hit("- Price: 37.50 euros", 0.66, "Catalogue > Zorvik kettle")]
    assert coverage("How much does the Zorvik kettle cost?", hits).covered
    missing = coverage("How much does the Quorvan toaster cost?", hits)
    assert not missing.covered and missing.missing == ["quorvan"]
    assert "no document mentions quorvan" in missing.reason
    weak = coverage("Who founded the shop?", [hit("Call us on +1 555 0142.", 0.35)])
    assert not weak.covered and weak.top == 0.35 and "under 0.40" in weak.reason
    # the same relevance with every name of the question found is enough
    named = [hit("Lovely staff and quick delivery.", 0.35, "Reviews > Review by Marta")]
    assert coverage("What did Marta say about the staff?", named).covered
    assert not coverage("What did Marta say?", [hit("Nice.", 0.25, "Review by Marta")]).covered
    assert not coverage("anything", []).covered
    code = coverage("Which product is SKU-99999?", hits)
    assert code.missing == ["sku-99999"]
    # The first word of a sentence is capitalised by grammar, not because it is a name.
    assert key_terms("Does the shop open on Sunday? Where is Zorvik made?") == ["sunday", "zorvik"]


def test_markers_and_quotes_make_citations() -> None:
    cites = cited_sources("The Zorvik kettle costs 37.50 euros [1].", [KETTLE, HOURS])
    assert [(c.number, c.how, c.quote) for c in cites] == [(1, "marker", "37.50 euros")]
    assert cites[0].id == "k" and cites[0].heading == "Catalogue > Zorvik kettle"
    quoted = cited_sources("On Saturday the shop is open from 10:00 to 16:00.", [KETTLE, HOURS])
    assert [(c.number, c.how, c.quote) for c in quoted] == [(2, "quote", "10:00 to 16:00")]
    # a long shared run of plain words counts as well; two plain words do not
    assert [
        c.number for c in cited_sources("Monday to Friday: always", [KETTLE, HOURS], min_words=3)
    ] == [2]
    assert cited_sources("Monday to Friday: always", [KETTLE, HOURS]) == []
    assert cited_sources("It is made in a nice way.", [KETTLE, HOURS]) == []
    assert cited_sources("See [7].", [KETTLE]) == []  # a marker of no given source
    assert longest_common_span("costs 37.50 euros", KETTLE.text) == (2, "37.50 euros", True)


def test_grounding_counts_supported_facts() -> None:
    q = "How much does the Zorvik kettle cost?"
    right = grounding("The Zorvik kettle costs 37.5 euros.", [KETTLE], q)
    assert right.score == 1.0 and right.unsupported == []
    assert ("number", "37.5", True) in right.facts  # 37.5 meets the source's 37.50
    wrong = grounding("The Zorvik kettle costs 42 euros and ships from Norway.", [KETTLE], q)
    assert wrong.unsupported == ["42", "norway"] and wrong.score == 0.0
    half = grounding("The Zorvik kettle weighs 1.2 kg and comes with free batteries.", [KETTLE], q)
    assert (
        half.unsupported == ["free batteries"] and half.score == 0.6667
    )  # 1.2, "kettle weighs" ok
    hours = grounding("It opens at 9:30 on weekdays.", [HOURS], "When does the shop open?")
    assert ("number", "9:30", True) in hours.facts
    assert grounding("I do not know.", [KETTLE], q).score == 1.0  # no facts, nothing unsupported
    assert grounding("Product SKU-38407 is made in Chile.", [KETTLE]).score == 1.0
    assert facts("Price: 1,250.00 euros on 09:05")[:2] == [("number", "1250"), ("number", "9:5")]
