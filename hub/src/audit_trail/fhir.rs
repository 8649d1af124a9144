//! The audit trail as HL7 FHIR R4 `AuditEvent` resources (`GET /api/v1/audit?format=fhir`, one
//! resource per line as FHIR NDJSON), for a hospital's audit repository or SIEM.
//!
//! Event types are DICOM's audit codes (PS3.16, DCM 1101xx) where one fits: authentication
//! (sign-in, code redemption), query, import (STOW-RS), DICOM instances accessed (reads, views),
//! export (downloads), audit log used; every other action is a RESTful operation. The subtype
//! names Ferry's own action (`share.extend`, …). The resources carry what the trail holds:
//! identifiers, never patient demographics.

use ferry_schemas::AuditEvent;
use serde_json::{Value, json};

/// Ferry's action names, as the subtype's code system.
pub const ACTION_SYSTEM: &str = "urn:ferry:audit-action";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

/// The event type: a DICOM audit code where one fits, else FHIR's "RESTful Operation".
fn event_type(action: &str) -> Value {
    let dcm = |code: &str, display: &str| json!({ "system": DCM, "code": code, "display": display });
    match action {
        "account.sign_in" | "share.redeem" => dcm("110114", "User Authentication"),
        "dicomweb.search" => dcm("110112", "Query"),
        "dicomweb.store" => dcm("110107", "Import"),
        "dicomweb.read" | "share.report" => dcm("110103", "DICOM Instances Accessed"),
        "share.download" | "transfer.download" => dcm("110106", "Export"),
        "audit.read" => dcm("110101", "Audit Log Used"),
        _ => json!({ "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" }),
    }
}

/// C(reate), R(ead), U(pdate), D(elete) or E(xecute), from the action's verb.
fn event_action(action: &str) -> &'static str {
    let verb = action.rsplit('.').next().unwrap_or(action);
    match verb {
        "create" | "register" | "issue" | "store" | "forward" | "attach" | "draft" => "C",
        "read" | "search" | "download" | "report" | "view" => "R",
        "extend" | "configure" | "rotate" | "unlock" | "reissue" | "link" | "update" | "set" => "U",
        // A transfer's or a referrer's new state.
        "sent" | "received" | "stored" | "failed" | "done" | "rejected" | "approved" | "pending" => "U",
        "delete" | "revoke" | "purge" | "remove" => "D",
        _ => "E",
    }
}

/// FHIR's outcome: 0 success, 4 minor failure (refused: a wrong answer, a lockout, no right),
/// 8 serious failure (an error).
fn outcome(result: &str) -> &'static str {
    match result {
        "ok" => "0",
        "failed" | "error" => "8",
        _ => "4",
    }
}

/// An instant (FHIR's `instant`: with seconds, milliseconds and a zone) from Unix milliseconds.
fn instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// What the event was about: a study by its UID, anything else by Ferry's identifier.
fn entity(e: &AuditEvent) -> Option<Value> {
    if e.object_id.is_empty() && e.detail.is_empty() {
        return None;
    }
    let mut entity = json!({
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
    });
    if !e.object_id.is_empty() {
        entity["what"] = if e.object_kind == "study" {
            json!({ "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{}", e.object_id) } })
        } else {
            json!({ "identifier": { "system": format!("urn:ferry:{}", e.object_kind), "value": e.object_id } })
        };
    }
    entity["name"] = json!(e.object_kind);
    if !e.detail.is_empty() {
        entity["detail"] = json!([{ "type": "detail", "valueString": e.detail }]);
    }
    Some(entity)
}

/// One audit record as a FHIR R4 `AuditEvent`. `hub` names the observer (the hub's public URL).
pub fn audit_event(e: &AuditEvent, hub: &str) -> Value {
    let mut agent = json!({
        "who": { "identifier": { "system": "urn:ferry:principal", "value": if e.actor.is_empty() { "anonymous" } else { e.actor.as_str() } } },
        "requestor": true,
    });
    if !e.client_addr.is_empty() {
        agent["network"] = json!({ "address": e.client_addr, "type": "2" });
    }
    let mut r = json!({
        "resourceType": "AuditEvent",
        "type": event_type(&e.action),
        "subtype": [{ "system": ACTION_SYSTEM, "code": e.action }],
        "action": event_action(&e.action),
        "recorded": instant(e.at),
        "outcome": outcome(&e.result),
        "agent": [agent],
        "source": {
            "site": hub,
            "observer": { "display": format!("Ferry hub {hub}") },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
    });
    if e.result != "ok" {
        r["outcomeDesc"] = json!(e.result);
    }
    if let Some(seq) = e.seq {
        r["id"] = json!(format!("ferry-audit-{seq}"));
    }
    if let Some(entity) = entity(e) {
        r["entity"] = json!([entity]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_utc_with_milliseconds() {
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn actions_map_to_dicom_codes_and_verbs() {
        assert_eq!(event_type("share.redeem")["code"], "110114");
        assert_eq!(event_type("share.extend")["code"], "rest");
        assert_eq!(event_action("share.extend"), "U");
        assert_eq!(event_action("share.report.attach"), "C");
        assert_eq!(event_action("share.revoke"), "D");
        assert_eq!(event_action("community.member.remove"), "D");
        assert_eq!(event_action("transfer.stored"), "U");
        assert_eq!(event_type("share.unlock")["code"], "rest");
        assert_eq!(outcome("denied"), "4");
    }
}
