"""Shared hypothesis strategies: hostile, Segment-shaped input for the collector and loader."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

CLICK_AND_UTM_PARAMS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id",
    "gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "li_fat_id", "ttclid",
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

#: percent-encoded bytes (valid UTF-8 or not), stray percent signs, separators and unicode
url_values = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=4).map(lambda b: "".join(f"%{x:02X}" for x in b)),
        st.text(max_size=6),
        st.sampled_from(["%", "%2", "%zz", "+", "&", "=", "#", "?", "%00", "%E9", "%C3%28"]),
    ),
    max_size=6,
).map("".join)

urls = st.builds(
    lambda scheme, host, path, pairs, fragment: (
        f"{scheme}{host}{path}?" + "&".join(f"{k}={v}" for k, v in pairs) + fragment
    ),
    st.sampled_from(["https://", "http://", "", "javascript:", "//"]),
    st.sampled_from(["acme.example", "xn--caf-dma.example", "ünï.example", ""]),
    url_values,
    st.lists(st.tuples(st.sampled_from(CLICK_AND_UTM_PARAMS) | st.text(max_size=8), url_values),
             max_size=4),
    st.sampled_from(["", "#", "#access_token=x%E9"]),
)

timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from([
        "2025-03-01T10:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
        "2025-W01-1", "2025-03-01", "yesterday", "", "2025-02-30T00:00:00Z",
    ]),
    json_values,
)

text_or_junk = st.one_of(st.text(max_size=12), json_values)


@st.composite
def segment_messages(draw: st.DrawFn, message_id: str) -> Any:
    """A message as a careless or hostile client sends it: mostly Segment's shape, any value
    anywhere. ``message_id`` is used unless the draw drops or replaces it."""
    if draw(st.integers(0, 30)) == 0:
        return draw(json_values)  # not an object at all
    message: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "page", "screen", "identify", "alias", "group"])
                     | text_or_junk),
        "anonymousId": draw(st.sampled_from(["a1", "a2"]) | text_or_junk),
        "timestamp": draw(timestamps),
        "context": {
            "page": {"url": draw(urls), "search": draw(st.sampled_from(["", "?"]).map(
                lambda s: s + draw(url_values)))},
            "campaign": draw(st.dictionaries(st.sampled_from(
                ["name", "source", "medium", "gclid", "fbclid", "term"]), text_or_junk,
                max_size=3)),
            "ip": draw(st.sampled_from(["203.0.113.9", "2001:db8::1", "999.1.1.1"])
                       | text_or_junk),
        },
        "properties": draw(st.dictionaries(
            st.sampled_from(["revenue", "total", "currency", "url", "email"]) | st.text(max_size=5),
            json_values, max_size=4)),
    }
    choice = draw(st.integers(0, 9))
    if choice > 1:
        message["messageId"] = message_id
    elif choice == 1:
        message["messageId"] = draw(json_values)
    if draw(st.booleans()):
        message["event"] = draw(text_or_junk)
    if draw(st.integers(0, 4)) == 0:
        message["userId"] = draw(text_or_junk)
    if draw(st.integers(0, 4)) == 0:
        message["traits"] = draw(json_values)
    if draw(st.integers(0, 6)) == 0:
        message["context"] = draw(json_values)
    return message
