"""Which audit controls a period of restore drills speaks to, and with what part of the pack.

The requirement texts are short paraphrases (the frameworks' own wording is
copyrighted and long); each row says which section of the pack an auditor
reads for it. A pack is evidence for these controls, never the whole of
them: policies, approvals and off-site copies are outside what a drill sees.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTROLS", "Control"]


@dataclass(frozen=True)
class Control:
    framework: str
    ref: str
    requirement: str  # paraphrased
    evidence: str  # where in the pack


CONTROLS: tuple[Control, ...] = (
    Control(
        "SOC 2 (TSC 2017)",
        "A1.2",
        "Backup processes and recovery infrastructure are put in place, operated and monitored.",
        "Last successful restore per backup source; every drill record names the backup it restored.",
    ),
    Control(
        "SOC 2 (TSC 2017)",
        "A1.3",
        "Recovery plan procedures supporting system recovery are tested.",
        "Per-runbook summary: drills run, pass rate, RTO/RPO achieved against objectives; deviations.",
    ),
    Control(
        "ISO/IEC 27001:2022",
        "A.8.13",
        "Backup copies are kept and regularly tested according to the backup policy.",
        "Cadence (required drills from the runbook schedule against drills run) and validator findings.",
    ),
    Control(
        "PCI DSS 4.0",
        "12.10.2",
        "The incident response plan, including business recovery and data backup processes, is tested "
        "at least once every 12 months.",
        "Drill dates in the period and the last successful restore per source.",
    ),
    Control(
        "HIPAA Security Rule",
        "164.308(a)(7)(ii)(D)",
        "Procedures for periodic testing and revision of contingency plans (addressable).",
        "Drill history with failures, their causes and the drill that remediated each (deviations).",
    ),
    Control(
        "DORA (EU 2022/2554)",
        "Art. 12",
        "Backup restoration and recovery procedures are tested periodically, restoring into systems "
        "separated from the source.",
        "Each record's isolation checks (restores into an isolated place) and teardown confirmation.",
    ),
    Control(
        "NIST SP 800-53 Rev. 5",
        "CP-4",
        "The contingency plan is tested at a defined frequency to judge its effectiveness.",
        "Cadence against the runbook schedule; RTO/RPO achieved against objectives.",
    ),
    Control(
        "NIST SP 800-53 Rev. 5",
        "CP-9(1)",
        "Backup information is tested for media reliability and information integrity.",
        "Backup verification in each record (manifest and WAL/binlog checks) and validator findings.",
    ),
)
