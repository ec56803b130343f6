from tests.detect_factories import Runner, detector, view

DAY = 86400.0


def test_a_grant_of_a_privileged_role_fires():
    run = Runner(detector("privilege_escalation"))
    assert run(view(0, action="grant", resource_type="role", resource_id="viewer")) == []
    [alert] = run(
        view(1, action="grant", attributes={"role": "Domain Admins", "target_user": "u9"})
    )
    assert alert.attributes["kind"] == "privileged_grant" and alert.severity == "critical"
    assert "T1098" in alert.mitre_techniques and "PCI DSS 10.2.5" in alert.compliance
    assert "u9" in alert.summary


def test_a_privileged_action_by_an_unprivileged_user_fires_and_by_an_admin_does_not():
    run = Runner(detector("privilege_escalation"))
    admin = {"action": "admin", "service": "admin-console", "resource_id": "mfa-policy"}
    assert run(view(0, privileged=True, actor_id="boss", **admin)) == []
    assert run(view(0, privileged=None, actor_id="unknown", **admin)) == []  # no directory
    assert run(view(0, privileged=False, outcome="failure", **admin)) == []
    [alert] = run(view(0, privileged=False, **admin))
    assert alert.attributes["kind"] == "unprivileged_admin"


def test_a_dormant_account_fires_after_ninety_days_of_silence():
    run = Runner(detector("dormant_account"))
    run(view(0))
    assert run(view(90 * DAY - 1)) == []
    [alert] = run(view(180 * DAY - 1))
    assert alert.attributes == {"kind": "dormant", "silent_days": "90"}
    assert "PCI DSS 8.2.6" in alert.compliance


def test_a_terminated_user_fires_on_any_event_and_later_ones_fold():
    run = Runner(detector("dormant_account"))
    [alert] = run(view(0, employment_status="terminated"))
    assert alert.severity == "critical"
    run(view(60, employment_status="terminated"))
    assert len(run.opened()) == 1 and run.alerts[-1].folded == 1


def test_first_restricted_access_after_learning():
    run = Runner(detector("first_restricted_access"))
    cards = {"action": "read", "service": "payments-db", "resource_type": "table"}
    assert run(view(0, sensitivity="restricted", resource_id="refunds", **cards)) == []
    assert run(view(8 * DAY, sensitivity="confidential", resource_id="x", **cards)) == []
    [alert] = run(view(8 * DAY + 1, sensitivity="restricted", resource_id="cards", **cards))
    assert alert.attributes["resource"] == "payments-db/table/cards"
    assert run(view(8 * DAY + 5000, sensitivity="restricted", resource_id="cards", **cards)) == []
    assert run(view(9 * DAY, sensitivity="restricted", resource_id="refunds", **cards)) == []
