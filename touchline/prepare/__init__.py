"""Prepare: raw events → ``touches`` (read through the ``touchpoints`` view), ``sessions``,
``identities``, ``persons``, ``accounts``.

:data:`STEPS` is the ordered list of named steps. Each is a pure function from Ibis tables to
tables that either drops rows (to ``rejects``, with the step name and a reason code) or changes
values (to ``audit``); :func:`run_prepare` runs them on the engine and writes the results.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from touchline.prepare import steps
from touchline.prepare.base import Context, Split, Step, StepResult
from touchline.prepare.runner import PrepareResult, StepProgress, StepReport, run_steps

if TYPE_CHECKING:
    from ibis.backends import BaseBackend

    from touchline.config import Settings

STEPS: tuple[Step, ...] = (
    Step("drop_missing_ids", steps.drop_missing_ids,
         why="a row without message_id cannot be deduplicated; one without any id fits no journey"),
    Step("drop_spam_calls", steps.drop_spam_calls,
         why="a robocall or a wrong number is no touch, and its caller no person"),
    Step("correct_clock_skew", steps.correct_clock_skew,
         why="client clocks are wrong; received_at - (sent_at - original_timestamp) is not"),
    Step("drop_impossible_timestamps", steps.drop_impossible_timestamps,
         why="an untimed or 1970-dated touch fits no journey"),
    Step("drop_future_timestamps", steps.drop_future_timestamps,
         why="a touch cannot happen after the server received it"),
    Step("dedupe_exact", steps.dedupe_exact,
         why="a retried or late copy of a message is the same touch"),
    Step("drop_bot_user_agents", steps.drop_bot_user_agents,
         why="crawler hits inflate reach and dilute credit"),
    Step("drop_bot_bursts", steps.drop_bot_bursts,
         why="hundreds of hits a minute from one device are a script, whatever its user agent"),
    Step("standardise_utm", steps.standardise_utm, stage=True,
         why="'Google ' and 'google' and 'fb' and 'facebook.com' are each one source"),
    Step("standardise_urls", steps.standardise_urls, stage=True,
         why="one page with and without tracking parameters is one page"),
    Step("standardise_contacts", steps.standardise_contacts,
         why="e-mails and phones link people only when written one way"),
    Step("convert_currency", steps.convert_currency, stage=True,
         why="revenue in many currencies cannot be summed"),
    Step("dedupe_cross_source", steps.dedupe_cross_source,
         why="a form fill seen by the tag, the CRM and the chat tool is one touch"),
    Step("dedupe_orders", steps.dedupe_orders,
         why="a reloaded thank-you page or a second tag would count one order twice"),
    Step("keep_retained_touches", steps.keep_retained_touches,
         why="raw events past their retention are deleted; the touches prepared from them stay"),
    Step("sessionise", steps.sessionise, persist_as="touches",
         why="channels are credited per visit, not per page view"),
    Step("classify_channels", steps.classify_channels,
         why="GA4's channel groups, by ordered named rules, on each session's landing"),
    Step("build_identity_graph", steps.build_identity_graph,
         why="one person's devices, e-mails and phones are one journey"),
    Step("assign_accounts", steps.assign_accounts,
         why="B2B journeys are the union of a company's people"),
)


def run_prepare(con: BaseBackend, settings: Settings, *, now: datetime | None = None,
                run_id: str | None = None, progress: StepProgress | None = None
                ) -> PrepareResult:
    """Rebuild every prepared table from ``events`` (and ``deals``) on ``con``.

    Idempotent: the same input gives the same tables; incremental runs are full rebuilds.
    ``now`` is the run's clock (future-timestamp checks, ``rejected_at``): pass it to pin a run.
    ``progress`` is told each step as it starts (a progress bar).
    """
    return run_steps(con, settings, STEPS, now=now, run_id=run_id, progress=progress)


__all__ = ["STEPS", "Context", "PrepareResult", "Split", "Step", "StepProgress", "StepReport",
           "StepResult", "run_prepare"]
