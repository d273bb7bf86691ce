"""Watchdog for one long training run: classify how an attempt ended, decide whether to restart."""

from spml.toolkit.watchdog.classify import (
    AttemptEnd,
    Diagnosis,
    FailureKind,
    classify,
    read_oom_evidence,
)
from spml.toolkit.watchdog.policy import (
    AttemptRecord,
    RestartDecision,
    RestartPolicy,
    decide_restart,
)
from spml.toolkit.watchdog.resume import ResumeChoice, choose_resume
from spml.toolkit.watchdog.verify import Verdict, verify_checkpoint

__all__ = [
    "AttemptEnd",
    "AttemptRecord",
    "Diagnosis",
    "FailureKind",
    "RestartDecision",
    "RestartPolicy",
    "ResumeChoice",
    "Verdict",
    "choose_resume",
    "classify",
    "decide_restart",
    "read_oom_evidence",
    "verify_checkpoint",
]
