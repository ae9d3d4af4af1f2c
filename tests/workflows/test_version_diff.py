"""The diff between two workflow versions (workflows.version_diff): steps matched as added,
removed, changed, moved or unchanged, parameters side by side under the builder's labels,
and the workflow's own fields as before → after."""

from typing import Any

from tests.factories import sms_step_definition
from workflows.version_diff import version_diff


def _sms(message: str) -> dict[str, Any]:
    return sms_step_definition(message)


def _step(step_type: str, **parameters: Any) -> dict[str, Any]:
    return {
        "type": step_type,
        "adapter": "",
        "function": "",
        "parameters": parameters,
        "purpose": "transactional",
        "urgent": False,
    }


def _delay(seconds: int) -> dict[str, Any]:
    return _step("delay", kind="duration", seconds=str(seconds))


def _condition(query: str) -> dict[str, Any]:
    return _step("condition", query=query, **{"else": "end"})


def _doc(*steps: dict[str, Any], **definition: Any) -> dict[str, Any]:
    return {
        "name": definition.pop("name", "Shipped"),
        "description": definition.pop("description", ""),
        "definition": {
            "trigger": "order.shipped",
            "filter": "",
            "steps": list(steps),
            **definition,
        },
    }


def _kinds(diff: Any) -> list[tuple[str, int | None, int | None]]:
    return [(s.kind, s.before, s.after) for s in diff.steps]


def test_the_same_document_has_no_changes_and_every_step_unchanged() -> None:
    document = _doc(_sms("Hi"), _delay(60))
    diff = version_diff(before=document, after=document)
    assert not diff.has_changes and diff.changed_fields == []
    assert _kinds(diff) == [("unchanged", 1, 1), ("unchanged", 2, 2)]


def test_a_changed_message_is_one_changed_step_with_its_parameters_side_by_side() -> None:
    diff = version_diff(before=_doc(_sms("Hi"), _delay(60)), after=_doc(_sms("Hello"), _delay(60)))
    assert _kinds(diff) == [("changed", 1, 1), ("unchanged", 2, 2)]
    step = diff.steps[0]
    assert step.title == "Twilio → Send SMS"
    # The builder's labels, in the schema's order; the send options after the parameters.
    labels = [row.label for row in step.rows]
    assert labels[-2:] == ["Consent needed", "Urgent"]
    changed = [(row.label, row.before, row.after) for row in step.changed_rows]
    assert changed == [("Message", "Hi", "Hello")]
    unchanged = {row.label: (row.before, row.after) for row in step.rows if not row.changed}
    assert unchanged["Consent needed"][0].startswith("Transactional")


def test_added_and_removed_steps_are_shown_with_their_parameters_on_their_side() -> None:
    diff = version_diff(
        before=_doc(_sms("Hi"), _condition('{"order.total": {"$gt": 10}}')),
        after=_doc(_delay(60), _sms("Hi")),
    )
    assert sorted(_kinds(diff), key=str) == sorted(
        [("added", None, 1), ("unchanged", 1, 2), ("removed", 2, None)], key=str
    )
    added = next(s for s in diff.steps if s.kind == "added")
    assert added.title == "Delay" and all(row.before == "" for row in added.rows)
    assert any(row.after == "60" for row in added.rows)
    removed = next(s for s in diff.steps if s.kind == "removed")
    assert removed.title == "Condition"
    assert [(r.before, r.after) for r in removed.rows if r.label == "Continue only if"] == [
        ('{"order.total": {"$gt": 10}}', "")
    ]


def test_a_step_moved_unchanged_is_one_move_not_a_removal_and_an_addition() -> None:
    a, b, c = _sms("A"), _delay(60), _sms("C")
    diff = version_diff(before=_doc(a, b, c), after=_doc(c, a, b))
    assert sorted(_kinds(diff), key=str) == sorted(
        [("moved", 3, 1), ("unchanged", 1, 2), ("unchanged", 2, 3)], key=str
    )
    counts = diff.counts
    assert (counts["moved"], counts["added"], counts["removed"]) == (1, 0, 0)


def test_steps_of_another_kind_in_the_same_place_are_removed_and_added_not_changed() -> None:
    diff = version_diff(before=_doc(_delay(60)), after=_doc(_sms("Hi")))
    assert _kinds(diff) == [("removed", 1, None), ("added", None, 1)]


def test_inserting_a_step_keeps_the_others_matched_by_content() -> None:
    before = _doc(_sms("One"), _sms("Two"), _sms("Three"))
    after = _doc(_sms("One"), _sms("New"), _sms("Two"), _sms("Three, edited"))
    assert _kinds(version_diff(before=before, after=after)) == [
        ("unchanged", 1, 1),
        ("added", None, 2),
        ("unchanged", 2, 3),
        ("changed", 3, 4),
    ]


def test_the_workflows_fields_show_before_and_after() -> None:
    before = _doc(_sms("Hi"), filter="", enrollment={"rule": "every", "days": None})
    after = _doc(
        _sms("Hi"),
        name="Shipped, v2",
        filter='{"order.total": {"$gt": 50}}',
        enrollment={"rule": "period", "days": 7, "exclusive": True},
        goal={"event": "order.delivered", "scope": "patient", "windowHours": 48, "filter": ""},
        exits=[{"event": "order.cancelled", "scope": "patient", "filter": ""}],
    )
    after["definition"]["trigger"] = "order.delivered"
    rows = {
        row.label: (row.before, row.after)
        for row in version_diff(before=before, after=after).changed_fields
    }
    assert rows["Name"] == ("Shipped", "Shipped, v2")
    assert rows["Trigger"] == ("order.shipped", "order.delivered")
    assert rows["Filter"] == ("", '{"order.total": {"$gt": 50}}')
    assert rows["Enrollment"][0].startswith("Every time")
    assert "7 days" in rows["Enrollment"][1] and "in progress" in rows["Enrollment"][1]
    assert rows["Goal"][0] == "no goal"
    assert rows["Goal"][1].startswith("order.delivered") and "48 hours" in rows["Goal"][1]
    assert rows["Exit conditions"] == ("", "order.cancelled (who: The same patient)")
    assert "Description" not in rows


def test_a_parameter_no_schema_names_and_a_broken_document_still_diff() -> None:
    odd = _sms("Hi")
    odd["parameters"]["legacy"] = "old"
    diff = version_diff(before=_doc(odd), after={"name": "x", "definition": "not a definition"})
    assert _kinds(diff) == [("removed", 1, None)]
    assert ("legacy", "old") in [(r.label, r.before) for r in diff.steps[0].rows]
    assert version_diff(before={}, after={}).steps == []
