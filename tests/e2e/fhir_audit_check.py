"""Validates an export of Ferry's audit trail as HL7 FHIR R4 AuditEvent resources (NDJSON).

Usage: fhir_audit_check.py FILE
Each line must parse as an R4 (R4B) AuditEvent with the fhir.resources models (cardinalities,
types, instants, no unknown elements), and its codes must come from the value sets that R4 binds
as "required" (which the models do not enforce). Prints the number of resources; exits non-zero
naming the first line that fails.
"""
import sys

from fhir.resources.R4B.auditevent import AuditEvent

REQUIRED = {
    "action": {"C", "R", "U", "D", "E"},
    "outcome": {"0", "4", "8", "12"},
    "network type": {"1", "2", "3", "4", "5"},
}

count = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            event = AuditEvent.model_validate_json(line)
        except Exception as e:  # noqa: BLE001 - report any validation failure with its line
            sys.exit(f"line {number}: not a valid R4 AuditEvent: {e}")
        codes = {
            "action": [event.action] if event.action else [],
            "outcome": [event.outcome] if event.outcome else [],
            "network type": [a.network.type for a in event.agent if a.network and a.network.type],
        }
        for name, values in codes.items():
            for v in values:
                if v not in REQUIRED[name]:
                    sys.exit(f"line {number}: {name} {v!r} is not in R4's required value set")
        count += 1
print(count)
