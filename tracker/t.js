/* touchline t.js: first-party journey tracking for the touchline collector (Segment format).
 * No dependencies. Config on the tag: data-key (write key), data-host (collector URL),
 * data-consent (granted | pending | cookieless), data-dnt ("true": honour Do-Not-Track),
 * data-strip-params (comma-separated query parameters never sent, beside the built-in secrets).
 * API: touchline.page(), .track(event, props), .identify(userId, traits), .consent(state),
 *      .flush(), .anonymousId(). consent("granted") sends what waited while pending; any other
 *      state (a refusal) drops it unsent, and later events go cookieless. */
(function (w, d) {
  "use strict";
  if (w.touchline && w.touchline.loaded) return;
  var D = w.__touchline_defaults || {};
  var tag = d.currentScript || d.querySelector("script[data-key]") || {};
  var at = function (n) { return tag.getAttribute ? tag.getAttribute(n) : null; };
  var host = (at("data-host") || (tag.src || "").replace(/\/[^\/]*$/, "")).replace(/\/$/, "");
  var key = at("data-key");
  var consent = at("data-consent") || D.consent || "granted";
  var dnt = at("data-dnt") != null ? at("data-dnt") === "true" : !!D.dnt;
  // query parameters that carry credentials: never sent (compared case-insensitively)
  var SECRET_PARAMS = ["access_token", "id_token", "refresh_token", "token", "password", "passwd",
                       "pwd", "secret", "auth", "code", "key", "api_key", "apikey", "session_id",
                       "sid"]
    .concat(D.stripParams || [], (at("data-strip-params") || "").split(","))
    .map(function (p) { return p.trim().toLowerCase(); }).filter(Boolean);
  var SESSION_MS = 30 * 60 * 1000, MAX_BATCH = 20, FLUSH_MS = 1000, BEACON_MAX = 60000;
  var CLICK_IDS = ["gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "li_fat_id", "ttclid"];
  var UTM = { utm_source: "source", utm_medium: "medium", utm_campaign: "name", utm_term: "term",
              utm_content: "content", utm_id: "id" };
  var queue = [], timer = null, failures = 0, mem = {}, lastUrl = null, userId = null;

  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  // storage only with consent: otherwise everything lives in memory for this page only
  function stored() { return consent === "granted"; }
  function get(k) {
    if (!stored()) return mem[k];
    try { var v = localStorage.getItem("tl_" + k); return v ? JSON.parse(v) : undefined; }
    catch (e) { return mem[k]; }
  }
  function set(k, v) {
    mem[k] = v;
    if (!stored()) return;
    try { localStorage.setItem("tl_" + k, JSON.stringify(v)); } catch (e) { /* full or blocked */ }
  }
  function cookie(name, value) {
    if (!stored()) return null;
    if (value !== undefined) {
      d.cookie = name + "=" + encodeURIComponent(value) + ";path=/;max-age=31536000;SameSite=Lax" +
        (location.protocol === "https:" ? ";Secure" : "");
      return value;
    }
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function anonymousId() {
    var id = cookie("tl_aid") || get("aid");
    if (!id) id = uuid();
    set("aid", id); cookie("tl_aid", id);
    return id;
  }
  // cookieless: a random id per page load, never stored: counts, not journeys
  function ephemeral() { return mem.eph || (mem.eph = "cookieless-" + uuid()); }
  function params(search) {
    var out = {};
    (search || "").replace(/^\?/, "").split("&").forEach(function (p) {
      var i = p.indexOf("="), k = i < 0 ? p : p.slice(0, i);
      if (!k) return;
      try { out[decodeURIComponent(k)] = decodeURIComponent((i < 0 ? "" : p.slice(i + 1)).replace(/\+/g, " ")); }
      catch (e) { /* malformed escape: skip */ }
    });
    return out;
  }
  // a URL as sent: no #fragment (OAuth puts tokens there) and no secret query parameters. The
  // other parameters are kept byte for byte: URLSearchParams would re-encode them (and turn a
  // bad escape into U+FFFD), changing the UTMs the collector reads.
  function clean(url) {
    if (!url) return url;
    var u;
    try { u = new URL(url, location.href); } catch (e) { return ""; }
    var kept = u.search.replace(/^\?/, "").split("&").filter(function (p) {
      var k = p.split("=")[0];
      try { k = decodeURIComponent(k.replace(/\+/g, " ")); } catch (e) { /* keep as text */ }
      return p && SECRET_PARAMS.indexOf(k.toLowerCase()) < 0;
    }).join("&");
    return u.origin + u.pathname + (kept ? "?" + kept : "");
  }
  function search(url) { var i = url.indexOf("?"); return i < 0 ? "" : url.slice(i); }
  // UTMs and click ids of the landing page, kept for the session; new ones start a new session
  function session() {
    var now = Date.now(), s = get("session"), q = params(location.search), camp = {}, fresh = false;
    for (var u in UTM) if (q[u]) { camp[UTM[u]] = q[u]; fresh = true; }
    CLICK_IDS.forEach(function (c) { if (q[c]) { camp[c] = q[c]; fresh = true; } });
    if (!s || now - s.last > SESSION_MS || (fresh && JSON.stringify(camp) !== JSON.stringify(s.campaign))) {
      s = { id: uuid(), start: now, campaign: fresh ? camp : {}, referrer: clean(d.referrer) || null };
    }
    s.last = now;
    set("session", s);
    return s;
  }
  function page() {
    var url = clean(location.href);
    return { url: url, path: location.pathname, search: search(url),
             title: d.title, referrer: lastUrl || clean(d.referrer) || "" };
  }
  function base(type, extra) {
    var s = session(), msg = {
      type: type, messageId: uuid(), timestamp: new Date().toISOString(),
      context: { page: page(), campaign: s.campaign, userAgent: navigator.userAgent,
                 locale: navigator.language, sessionId: s.id, consent: consent,
                 library: { name: "touchline.js", version: "0.1.0" } }
    };
    msg.anonymousId = api.anonymousId() || ephemeral();
    var uid = userId || get("uid");
    if (uid && consent !== "cookieless") msg.userId = uid;
    for (var k in extra) msg[k] = extra[k];
    return msg;
  }
  function enqueue(msg) {
    queue.push(msg);
    if (consent === "pending") return;  // held in memory until consent() decides
    if (queue.length >= MAX_BATCH) flush();
    else if (!timer) timer = setTimeout(flush, FLUSH_MS);
  }
  function body(batch) {
    return JSON.stringify({ writeKey: key, sentAt: new Date().toISOString(), batch: batch });
  }
  function flush() {
    clearTimeout(timer); timer = null;
    if (!queue.length || consent === "pending") return;
    var batch = queue.splice(0, MAX_BATCH);
    // text/plain keeps this a "simple" request: no CORS preflight
    fetch(host + "/v1/batch", { method: "POST", body: body(batch), keepalive: true,
                                headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        if (r.status === 429 || r.status >= 500) throw new Error("retry");
        failures = 0;  // any other answer is final: Segment clients drop on 4xx
        if (queue.length) flush();
      })
      .catch(function () {
        queue = batch.concat(queue);
        failures += 1;
        var wait = Math.min(30000, 1000 * Math.pow(2, failures)) * (0.5 + Math.random() / 2);
        clearTimeout(timer); timer = setTimeout(flush, wait);
      });
  }
  function beacon() {
    if (!queue.length || consent === "pending" || !navigator.sendBeacon) return;
    while (queue.length) {
      var n = Math.min(queue.length, MAX_BATCH), text = body(queue.slice(0, n));
      while (text.length > BEACON_MAX && n > 1) { n = Math.ceil(n / 2); text = body(queue.slice(0, n)); }
      if (!navigator.sendBeacon(host + "/v1/batch", new Blob([text], { type: "text/plain" }))) break;
      queue.splice(0, n);
    }
  }
  var api = {
    loaded: true,
    page: function (props) {
      var p = page(), m = base("page", { properties: {} });
      for (var k in p) m.properties[k] = p[k];
      for (k in props || {}) m.properties[k] = props[k];
      lastUrl = p.url;
      enqueue(m);
    },
    track: function (event, props) { enqueue(base("track", { event: event, properties: props || {} })); },
    identify: function (uid, traits) {
      if (typeof uid === "object" && uid) { traits = uid; uid = null; }
      if (uid) { userId = uid; set("uid", uid); }
      enqueue(base("identify", { traits: traits || {} }));
    },
    consent: function (state) {
      var was = consent;
      consent = state === "granted" ? "granted" : "cookieless";
      // a refusal drops what waited for the answer: it may hold e-mails, phones or tokens
      if (was === "pending" && consent !== "granted") queue = [];
      var ids = api.anonymousId() || ephemeral();
      queue.forEach(function (m) { m.anonymousId = ids; m.context.consent = consent; });
      flush();
    },
    flush: flush,
    anonymousId: function () { return consent === "cookieless" ? null : anonymousId(); }
  };
  w.touchline = api;
  if (dnt && (navigator.doNotTrack === "1" || w.doNotTrack === "1")) {
    for (var k in api) if (typeof api[k] === "function") api[k] = function () {};
    return;
  }

  // SPA navigation: history API and back/forward; a change of #hash alone is not a page
  var where = function () { return location.pathname + location.search; }, shown = where();
  function moved() { if (where() !== shown) { shown = where(); api.page(); } }
  ["pushState", "replaceState"].forEach(function (name) {
    var orig = history[name];
    history[name] = function () { var r = orig.apply(this, arguments); moved(); return r; };
  });
  w.addEventListener("popstate", moved);

  // CTA clicks and marked forms
  d.addEventListener("click", function (e) {
    var el = e.target && e.target.closest && e.target.closest("[data-touchline-cta]");
    if (el) api.track("CTA Clicked", { cta: el.getAttribute("data-touchline-cta"),
      text: (el.textContent || "").trim().slice(0, 200), href: el.getAttribute("href") });
  }, true);
  d.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form || !form.hasAttribute || !form.hasAttribute("data-touchline-form")) return;
    var fields = {}, email = null, els = form.querySelectorAll("[data-touchline-field]");
    for (var i = 0; i < els.length; i++) {
      var name = els[i].getAttribute("data-touchline-field") || els[i].name, v = els[i].value;
      fields[name] = v;
      if ((els[i].type === "email" || name === "email") && /.+@.+/.test(v)) email = v.trim();
    }
    if (email) api.identify({ email: email });
    api.track("Form Submitted", { form: form.getAttribute("data-touchline-form"), fields: fields });
    flush();
  }, true);

  // page hide: whatever is queued goes out by beacon
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") beacon(); });
  w.addEventListener("pagehide", beacon);

  // dynamic number insertion: show this session's tracking number
  function dni() {
    var els = d.querySelectorAll("[data-touchline-phone]");
    if (!els.length || consent === "pending") return;
    var s = session();
    fetch(host + "/v1/dni/lease", { method: "POST", headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ writeKey: key, anonymousId: api.anonymousId(), sessionId: s.id,
        campaign: { source: s.campaign.source, medium: s.campaign.medium,
                    campaign: s.campaign.name, term: s.campaign.term } }) })
      .then(function (r) { return r.json(); })
      .then(function (lease) {
        if (!lease.number) return;
        for (var i = 0; i < els.length; i++) {
          els[i].textContent = lease.number;
          if (els[i].tagName === "A") els[i].setAttribute("href", "tel:" + lease.number);
          els[i].setAttribute("data-touchline-leased", lease.leaseId);
        }
      })["catch"](function () { /* the site's own number stays */ });
  }
  api.page();
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", dni); else dni();
})(window, document);
