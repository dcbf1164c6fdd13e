"""A tiny hand-made warehouse for the charts, the report and the dashboard.

Four people. p1 finds the shop by organic search, buys after a paid click, buys again from a
newsletter; p2 reads a newsletter, becomes a lead, buys after a paid click; p3 becomes a lead
and buys in the CRM with no touch in the window; p4 buys after one newsletter visit. Every
figure the tests expect is worked out by hand in their comments.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from factories import arrow_table
from ibis.backends import BaseBackend

from touchline import engine, store

SESSIONS = {  # id: person, start, channel, source, medium, campaign, keyword
    "s1": ("p1", "2025-03-01 09:00", "Organic Search", "google", "organic", None, None),
    "s2": ("p1", "2025-03-05 10:00", "Paid Search", "google", "cpc", "spring", "crm"),
    "s3": ("p1", "2025-04-10 10:00", "Email", "newsletter", "email", "april", None),
    "s4": ("p2", "2025-03-02 11:00", "Email", "newsletter", "email", "march", None),
    "s5": ("p2", "2025-03-20 11:00", "Paid Search", "google", "cpc", "spring", "erp"),
    "s6": ("p3", "2025-04-02 12:00", "Paid Search", "google", "cpc", "spring", "crm"),
    "s7": ("p4", "2025-04-20 09:00", "Email", "newsletter", "email", "april", None),
}
TOUCHES = [  # message id, session, time, type, event or page path
    ("t1", "s1", "2025-03-01 09:00", "page", "/"),
    ("t2", "s2", "2025-03-05 10:00", "page", "/pricing"),
    ("t3", "s2", "2025-03-05 10:05", "track", "Order Completed"),
    ("t4", "s3", "2025-04-10 10:00", "page", "/news"),
    ("t5", "s3", "2025-04-10 10:05", "track", "Order Completed"),
    ("t6", "s4", "2025-03-02 11:00", "page", "/"),
    ("t7", "s5", "2025-03-20 11:00", "page", "/pricing"),
    ("t8", "s6", "2025-04-02 12:00", "page", "/"),
    ("t9", "s7", "2025-04-20 09:00", "page", "/"),
]
JOURNEYS = {  # id: converted at (None: open), value, sessions in order
    "purchase:p1:1": ("2025-03-05 10:05", 100.0, ["s1", "s2"]),
    "purchase:p1:2": ("2025-04-10 10:05", 50.0, ["s3"]),
    "purchase:p2:1": ("2025-03-20 11:05", 200.0, ["s4", "s5"]),
    "purchase:p3:1": ("2025-04-15 09:00", 80.0, []),  # a CRM sale, no touch in its window
    "purchase:p3:open": (None, 0.0, ["s6"]),
    "purchase:p4:1": ("2025-04-20 09:30", 30.0, ["s7"]),
    "lead:p2:1": ("2025-03-02 11:10", 0.0, ["s4"]),
    "lead:p3:1": ("2025-04-02 12:05", 0.0, ["s6"]),
}
CREDITS = {  # (journey, model): credit of each position, in order
    ("purchase:p1:1", "linear"): [0.5, 0.5], ("purchase:p1:2", "linear"): [1.0],
    ("purchase:p2:1", "linear"): [0.5, 0.5], ("purchase:p4:1", "linear"): [1.0],
    ("purchase:p1:1", "last_touch"): [0.0, 1.0], ("purchase:p1:2", "last_touch"): [1.0],
    ("purchase:p2:1", "last_touch"): [0.0, 1.0], ("purchase:p4:1", "last_touch"): [1.0],
    ("lead:p2:1", "linear"): [1.0], ("lead:p3:1", "linear"): [1.0],
}
SPEND = [  # date, channel, source, medium, campaign, keyword, cost
    ("2025-03-03", "paid_search", "google", "cpc", "Spring ", "crm", 60.0),  # as ads export
    ("2025-04-01", "Paid Search", "google", "cpc", "spring", "erp", 40.0),
    ("2025-03-10", "Paid Social", "facebook", "paid", "summer", None, 30.0),
]
STAGES = [  # unit, unit id, stage model, stage, order, entered at
    ("person", "p1", "lifecycle", "awareness", 1, "2025-03-01 09:00"),
    ("person", "p1", "lifecycle", "consideration", 2, "2025-03-05 10:00"),
    ("person", "p1", "lifecycle", "decision", 3, "2025-03-05 10:05"),
    ("person", "p1", "lifecycle", "retention", 4, "2025-04-10 10:05"),
    ("person", "p2", "lifecycle", "awareness", 1, "2025-03-02 11:00"),
    ("person", "p2", "lifecycle", "decision", 3, "2025-03-20 11:05"),  # skipped consideration
    ("person", "p3", "lifecycle", "awareness", 1, "2025-04-02 12:00"),
    ("person", "p4", "lifecycle", "awareness", 1, "2025-04-20 09:00"),
    ("person", "p4", "lifecycle", "decision", 3, "2025-04-20 09:30"),
    ("account", "crm:acme", "lifecycle", "awareness", 1, "2025-01-01 00:00"),  # not a person
    ("person", "p1", "funnel", "top", 1, "2025-03-01 09:00"),  # another stage model
]
REJECTS = [  # step, reason code, rejected at
    ("ingest:events", "bad_timestamp", "2025-03-01 00:00"),
    ("ingest:events", "bad_timestamp", "2025-04-01 00:00"),
    ("drop_bots", "bot", "2025-04-02 00:00"),
    ("ingest:deals", "missing_field", "2025-03-15 00:00"),
]
IDENTITIES = {"user:u1": "p1", "email:ann@example.com": "p1", "anon:a1": "p1",
              "anon:a2": "p2", "user:u3": "p3", "anon:a4": "p4"}
ACCOUNTS = {"p1": "domain:acme.example", "p2": "domain:acme.example"}  # two stakeholders
#: the user agent of each session's first touch (the loaded event's): the device filter's
#: input. s6 (p3's lead) came from a call: no user agent
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148 Safari/604.1"
TABLET = "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) Version/17.4 Safari/604.1"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36"
AGENTS = {"t1": DESKTOP, "t2": PHONE, "t3": PHONE, "t4": TABLET, "t5": TABLET, "t6": DESKTOP,
          "t7": PHONE, "t8": None, "t9": DESKTOP}
SURVEYS = [("r1", "u1", None, 10, "2025-05-01 00:00", "a friend")]
REVIEWS = [  # platform, stars, posted at, reviewer's e-mail: p1 (Organic Search), no one
    ("google", 5.0, "2025-05-02 00:00", "Ann@Example.com"),
    ("trustpilot", 2.0, "2025-05-03 00:00", "stranger@example.com")]


def _ts(text: str | None) -> str | None:
    return None if text is None else text + ":00"


def build_warehouse(con: BaseBackend) -> BaseBackend:
    """Load the hand-made tables (and the two views) into ``con``."""
    def load(spec: store.TableSpec, rows: list[dict[str, object]]) -> None:
        engine.load_table(con, spec.name, arrow_table(spec, rows))

    load(store.SESSIONS, [
        dict(session_id=f"anon:{p}#{sid[1:]}", device_id=f"anon:{p}", person_id=p,
             account_id=ACCOUNTS.get(p),
             session_index=int(sid[1:]), started_at=_ts(start), channel=channel, source=source,
             medium=medium, campaign=campaign, term=term, landing_page="https://shop.example/")
        for sid, (p, start, channel, source, medium, campaign, term) in SESSIONS.items()])
    load(store.TOUCHES, [
        dict(message_id=mid, timestamp=_ts(at), type=kind,
             event=what if kind == "track" else None,
             page_path=what if kind == "page" else None,
             device_id=f"anon:{SESSIONS[sid][0]}", session_index=int(sid[1:]),
             anonymous_id="a" + SESSIONS[sid][0][1:],
             is_landing=at == SESSIONS[sid][1])
        for mid, sid, at, kind, what in TOUCHES])
    load(store.EVENTS, [dict(message_id=mid, timestamp=_ts(at), type=kind,
                             user_agent=AGENTS[mid]) for mid, sid, at, kind, _ in TOUCHES])
    journeys, steps, credits = [], [], []
    for jid, (at, value, visits) in JOURNEYS.items():
        conversion, person, seq = jid.split(":")
        first = SESSIONS[visits[0]][1] if visits else None
        journeys.append(dict(journey_id=jid, conversion=conversion, unit="person",
                             unit_id=person, sequence=None if seq == "open" else int(seq),
                             converted=at is not None, converted_at=_ts(at), value=value,
                             touches=len(visits), first_touch_at=_ts(first),
                             last_touch_at=_ts(SESSIONS[visits[-1]][1]) if visits else None,
                             days_to_convert=None if first is None or at is None else (
                                 datetime.fromisoformat(at) - datetime.fromisoformat(first)
                             ) / timedelta(days=1)))
        for position, sid in enumerate(visits, start=1):
            steps.append(dict(journey_id=jid, position=position,
                              session_id=f"anon:{SESSIONS[sid][0]}#{sid[1:]}",
                              touch_at=_ts(SESSIONS[sid][1])))
    for (jid, model), shares in CREDITS.items():
        at, value, visits = JOURNEYS[jid]
        for position, share in enumerate(shares, start=1):
            credits.append(dict(journey_id=jid, position=position, model=model,
                                conversion=jid.split(":")[0],
                                channel=SESSIONS[visits[position - 1]][2],
                                touch_at=_ts(SESSIONS[visits[position - 1]][1]),
                                converted_at=_ts(at), credit=share, value=share * value))
    load(store.JOURNEYS, journeys)
    load(store.JOURNEY_STEPS, steps)
    load(store.CREDITS, credits)
    load(store.SPEND, [dict(zip(("date", "channel", "utm_source", "utm_medium", "utm_campaign",
                                 "keyword", "cost"), (date.fromisoformat(r[0]), *r[1:]),
                                strict=True)) for r in SPEND])
    load(store.STAGES, [dict(unit=u, unit_id=i, stage_model=m, stage=s, stage_order=o,
                             entered_at=_ts(at)) for u, i, m, s, o, at in STAGES])
    load(store.REJECTS, [dict(reject_id=f"r{n}", step=step, reason_code=code,
                              reason=f"{code} (test)", rejected_at=_ts(at))
                         for n, (step, code, at) in enumerate(REJECTS)])
    load(store.IDENTITIES, [dict(identifier=i, person_id=p, kind=i.split(":")[0])
                            for i, p in IDENTITIES.items()])
    load(store.PERSONS, [dict(person_id=p, user_id="u" + p[1:]) for p in ("p1", "p2", "p3",
                                                                          "p4")])
    # p1's identifiers joined by two links; no guard cut any (no call table: never imported)
    load(store.IDENTITY_LINKS, [
        dict(link_id=f"{a}|{b}", identifier_a=a, identifier_b=b, status="linked")
        for a, b in (("anon:a1", "user:u1"), ("email:ann@example.com", "user:u1"))])
    load(store.ACCOUNTS, [dict(account_id="domain:acme.example", account_name="acme.example",
                               domain="acme.example", account_source="email_domain",
                               person_count=2)])
    load(store.DEALS, [])
    load(store.SURVEYS, [dict(response_id=r, person_id=p, email=e, nps_score=n,
                              responded_at=_ts(at), heard_about=h)
                         for r, p, e, n, at, h in SURVEYS])
    load(store.REVIEWS, [dict(platform=pl, rating=r, reviewed_at=_ts(at), email=e,
                              row_hash=f"h{n}") for n, (pl, r, at, e) in enumerate(REVIEWS)])
    con.create_view("touchpoints", store.touchpoints_view(con), overwrite=True)
    con.create_view("journey_touches", store.journey_touches_view(con), overwrite=True)
    return con


# ---- the data-quality page's own warehouse ----------------------------------------------------
#: the last prepare ran at RUN_AT: it read 6 touches and dropped or merged 6 rows (12 read)
RUN_AT = "2025-05-01 12:00"
QUALITY_REJECTS = [  # step, reason code, rejected at, ingest id
    ("prepare:drop_bot_user_agents", "bot_user_agent", RUN_AT, "prepare-1"),
    ("prepare:drop_bot_user_agents", "bot_user_agent", RUN_AT, "prepare-1"),
    ("prepare:drop_bot_bursts", "bot_behaviour", RUN_AT, "prepare-1"),
    ("prepare:dedupe_exact", "duplicate_message_id", RUN_AT, "prepare-1"),
    ("prepare:dedupe_exact", "duplicate_message_id", RUN_AT, "prepare-1"),
    ("prepare:dedupe_cross_source", "cross_source_duplicate", RUN_AT, "prepare-1"),
    ("ingest:events", "duplicate_in_file", "2025-04-01 08:00", "i1"),
    ("ingest:events", "bad_timestamp", "2025-04-01 08:00", "i1"),
    ("collect:spool", "duplicate", "2025-04-20 10:00", "collector:seg-1:0"),
]
QUALITY_INGESTS = [  # id, kind, loaded, duplicates (in the file and already stored), end
    ("i1", "events", 10, 3, "2025-04-01 08:00"),
    ("i2", "spend", 5, 0, "2025-04-10 09:00"),
]
#: the collector's loads: a live segment's row and the row every load keeps
QUALITY_OFFSETS = [("seg-2", 100, "2025-04-20 09:00"), ("@loaded", 900, "2025-04-20 10:00")]
QUALITY_CALLS = {  # call id: started at, the match status its event records (None: no event)
    "c1": ("2025-04-05 10:00", "matched"),
    "c2": ("2025-04-06 10:00", "unmatched"),
    "c3": ("2025-04-07 10:00", "unmatched"),
    "c4": ("2025-04-25 10:00", None),  # not matched yet: `touchline run` has not seen it
    "c5": ("2025-04-26 10:00", "expired"),
    "c6": ("2025-04-27 10:00", "integration"),  # the telephony tool sent its own event
}
QUALITY_LINKS = [("linked", None)] * 4 + [("cut", "max_degree")] * 2 + [("cut", "unlinked")]


def build_quality_warehouse(con: BaseBackend) -> BaseBackend:
    """The tables the data-quality charts read, by hand (see the constants above)."""
    def load(spec: store.TableSpec, rows: list[dict[str, object]]) -> None:
        engine.load_table(con, spec.name, arrow_table(spec, rows))

    load(store.TOUCHES, [dict(message_id=f"t{n}") for n in range(6)])
    load(store.SESSIONS, [dict(session_id=f"s{n}", device_id="anon:a") for n in range(2)])
    load(store.PERSONS, [dict(person_id="p1")])
    load(store.JOURNEYS, [dict(journey_id=f"j{n}", conversion="purchase", converted=n < 2)
                          for n in range(3)])
    load(store.CREDITS, [dict(journey_id="j0", position=1, model=m, credit=1.0)
                         for m in ("linear", "last_touch")])
    load(store.REJECTS, [dict(reject_id=f"r{n}", step=step, reason_code=code,
                              reason=f"{code} (test)", rejected_at=_ts(at), ingest_id=iid)
                         for n, (step, code, at, iid) in enumerate(QUALITY_REJECTS)])
    load(store.AUDIT, [dict(audit_id="a1", run_id="prepare-1", step="standardise_utm",
                            reason_code="source_alias", row_count=3, audited_at=_ts(RUN_AT))])
    load(store.INGESTS, [dict(ingest_id=i, kind=k, loaded=n, duplicates=d, rows_read=n + d,
                              finished_at=_ts(at)) for i, k, n, d, at in QUALITY_INGESTS])
    load(store.SPOOL_OFFSETS, [dict(segment=s, loaded_bytes=b, updated_at=_ts(at))
                               for s, b, at in QUALITY_OFFSETS])
    load(store.CALLS, [dict(call_id=c, started_at=_ts(at))
                       for c, (at, _) in QUALITY_CALLS.items()])
    load(store.EVENTS, [
        dict(message_id=f"call:{c}", type="track", event="Phone Call", source="calls",
             properties=f'{{"match_status": "{status}"}}')
        if status != "integration" else
        dict(message_id=f"tel-{c}", type="track", event="Phone Call", source="calls",
             properties=f'{{"call_id": "{c}"}}')
        for c, (_, status) in QUALITY_CALLS.items() if status is not None])
    load(store.IDENTITY_LINKS, [dict(link_id=f"l{n}", status=s, reason=r)
                                for n, (s, r) in enumerate(QUALITY_LINKS)])
    return con
