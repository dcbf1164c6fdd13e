"""The official Segment Python client, unmodified but for the host, against the collector."""

from __future__ import annotations

from collector_kit import LiveCollector
from segment.analytics import Client


def test_official_client_events_arrive_exactly_once(collector: LiveCollector) -> None:
    errors: list[Exception] = []
    client = Client(
        collector.warehouse.write_key,
        host=collector.url,
        gzip=True,
        max_retries=3,
        upload_size=25,
        on_error=lambda error, _items: errors.append(error),
    )
    sent: list[str] = []
    try:
        for i in range(60):
            _, message = client.track(
                anonymous_id=f"anon-{i % 7}",
                event="Product Viewed",
                properties={"sku": f"sku-{i}", "revenue": i},
                context={"page": {"url": f"https://shop.example/p/{i}?utm_source=google"}},
            )
            sent.append(message["messageId"])
        _, page = client.page(anonymous_id="anon-1", category="Docs", name="Install")
        _, identify = client.identify(user_id="user-1", traits={"email": "Ann@Example.com"})
        _, group = client.group(user_id="user-1", group_id="acme", traits={"name": "Acme"})
        _, alias = client.alias(previous_id="anon-1", user_id="user-1")
        sent += [m["messageId"] for m in (page, identify, group, alias)]
        client.flush()
    finally:
        client.join()
    assert errors == []
    collector.warehouse.load()
    rows = collector.warehouse.query("SELECT message_id, count(*) FROM events GROUP BY 1")
    assert sorted(m for m, _ in rows) == sorted(sent)
    assert {count for _, count in rows} == {1}
    assert collector.warehouse.query(
        "SELECT type, count(*), count(utm_source), max(email) FROM events GROUP BY 1 ORDER BY 1"
    ) == [
        ("alias", 1, 0, None),
        ("group", 1, 0, None),
        ("identify", 1, 0, "ann@example.com"),
        ("page", 1, 0, None),
        ("track", 60, 60, None),
    ]
    assert collector.warehouse.query("SELECT count(*) FROM rejects") == [(0,)]
