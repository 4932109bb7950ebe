"""The overlap rule and the status a shard reports: pure functions, no cluster."""

from __future__ import annotations

from wasp_operator.conflicts import Conflict, ShardRef, losing_conflict, overlaps
from wasp_operator.status import Observed, shard_status

from wasp.shard import WhatsAppShardSpec
from wasp.slots import SlotRange

OLD = ShardRef("2026-01-01T00:00:00Z", "w1", "u1", SlotRange.parse("A1", "A50"))
NEW = ShardRef("2026-01-02T00:00:00Z", "w2", "u2", SlotRange.parse("A40", "A90"))
OTHER_PREFIX = ShardRef("2026-01-03T00:00:00Z", "b1", "u3", SlotRange.parse("B1", "B50"))


def test_newer_shard_loses_and_older_keeps_its_range() -> None:
    conflict = losing_conflict(NEW, [OLD, NEW, OTHER_PREFIX])
    assert conflict == Conflict("w1", SlotRange.parse("A40", "A50"))
    assert losing_conflict(OLD, [OLD, NEW, OTHER_PREFIX]) is None
    assert losing_conflict(OTHER_PREFIX, [OLD, NEW, OTHER_PREFIX]) is None


def test_same_creation_time_is_broken_by_name() -> None:
    twin = ShardRef(OLD.created, "w0", "u9", SlotRange.parse("A10", "A20"))
    assert losing_conflict(OLD, [OLD, twin]) == Conflict("w0", SlotRange.parse("A10", "A20"))
    assert losing_conflict(twin, [OLD, twin]) is None


def test_admission_overlaps_name_every_other_shard() -> None:
    found = overlaps(SlotRange.parse("A45", "A95"), [OLD, NEW, OTHER_PREFIX], "w3")
    assert [(c.other, str(c.shared)) for c in found] == [("w1", "A45..A50"), ("w2", "A45..A90")]
    assert overlaps(OLD.slots, [OLD], "w1") == []  # an update does not conflict with itself
    assert "6 slots" in found[0].message()


SPEC = WhatsAppShardSpec.model_validate({"slotFrom": "A1", "slotTo": "A50"})


def conditions(status: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined]


def test_status_moves_pending_ready_degraded_and_keeps_transition_times() -> None:
    pending = shard_status("w1", SPEC, Observed(generation=1), None, "http://e", "T1")
    assert pending["phase"] == "Pending"
    assert conditions(pending)["Ready"]["status"] == "False"
    ready = shard_status(
        "w1",
        SPEC,
        Observed(generation=1, ready_replicas=1, rolled_out=True, active=3, max_active=20),
        pending,
        "http://e",
        "T2",
    )
    assert ready["phase"] == "Ready"
    assert ready["active"] == 3
    assert ready["maxActive"] == 20
    assert conditions(ready)["Ready"]["lastTransitionTime"] == "T2"
    assert conditions(ready)["SlotConflict"]["lastTransitionTime"] == "T1"  # unchanged: kept
    assert conditions(ready)["Progressing"]["status"] == "False"
    again = shard_status(
        "w1",
        SPEC,
        Observed(generation=1, ready_replicas=1, rolled_out=True),
        ready,
        "http://e",
        "T3",
    )
    assert again["active"] == 3  # health not read this time: last known figure stays
    assert conditions(again)["Ready"]["lastTransitionTime"] == "T2"
    lost = shard_status("w1", SPEC, Observed(generation=1), again, "http://e", "T4")
    assert lost["phase"] == "Degraded"


def test_conflict_and_suspend_phases() -> None:
    conflict = Conflict("w0", SlotRange.parse("A1", "A5"))
    status = shard_status("w1", SPEC, Observed(generation=2, conflict=conflict), None, "e", "T")
    assert status["phase"] == "Conflict"
    slot_conflict = conditions(status)["SlotConflict"]
    assert slot_conflict["status"] == "True"
    assert "'w0'" in slot_conflict["message"]
    assert "A1..A5" in slot_conflict["message"]
    suspended = WhatsAppShardSpec.model_validate(
        {"slotFrom": "A1", "slotTo": "A5", "suspend": True}
    )
    assert (
        shard_status("w1", suspended, Observed(generation=1), None, "e", "T")["phase"]
        == "Suspended"
    )
