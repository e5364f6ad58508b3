"""Counting and listing what a build could not use: every use counts, lists point at the rest."""

from __future__ import annotations

from synth import problems


def _records() -> list[dict]:
    bad = {"input": "coco[3]", "reason": "a.jpg: cannot decode image; replace it"}
    return [
        {"skipped": [{**bad, "uses": [[0, 0], [2, 1]]}]},
        {
            "skipped": [
                {**bad, "uses": [[9, 0]]},
                {"input": "coco[7]", "reason": "b.jpg: file not found", "uses": [[8, 3]]},
            ],
            "omitted": {"inputs": 2, "uses": 5},
        },
        {},
    ]


def test_skipped_inputs_count_every_use_and_keep_the_first_reason():
    recs = _records()
    assert problems.skipped_inputs(recs) == [
        ("coco[3]", 3, "a.jpg: cannot decode image; replace it"),
        ("coco[7]", 1, "b.jpg: file not found"),
    ]
    assert problems.skipped_uses(recs) == 3 + 1 + 5


def test_render_skipped_lists_the_first_and_points_at_the_rest():
    recs = _records()
    lines = problems.render_skipped(problems.skipped_inputs(recs), 9, "synth info S --problems", 1)
    assert lines[0].startswith("skipped      9 input uses, 2 distinct")
    assert lines[1] == "  - coco[3] (x3): a.jpg: cannot decode image; replace it"
    assert "  (5 uses of inputs a full shard record could not list)" in lines
    assert lines[-1] == "  ... 1 more: synth info S --problems"
    everything = problems.render_skipped(problems.skipped_inputs(recs), 9, "x", None)
    assert not any(ln.startswith("  ...") for ln in everything)


def test_source_problems_are_collected_counted_and_rendered():
    class Coco:
        problems = (("instances.json: annotation 1", "polygon is empty"),) * 7

    class Textures:  # no ``problems``: rejects nothing while indexing
        pass

    found = problems.source_problems([("coco", Coco()), ("dtd", Textures())])
    assert len(found) == 7 and found[0] == {
        "source": "coco",
        "where": "instances.json: annotation 1",
        "reason": "polygon is empty",
    }
    assert problems.problem_counts(found) == {"coco": 7}
    lines = problems.render_source_problems(found, "P")
    assert lines[0] == "rejected     7 source item(s) while indexing (coco 7)"
    assert len(lines) == 1 + problems.LISTED + 1 and lines[-1] == "  ... 2 more: P"
    assert problems.render_source_problems([], "P") == [
        "rejected     0 source item(s) while indexing"
    ]
    assert "not recorded" in problems.render_source_problems(None, "P")[0]
