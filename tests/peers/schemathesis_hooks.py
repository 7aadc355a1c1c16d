"""Schemathesis hooks for the hub's API conformance test (tests/tests/api_conformance.rs).

OpenAPI 3.0 describes each parameter on its own; a few of the hub's rules
relate parameters to each other (and to the hub's configured limits). They
are stated in the operations' descriptions and refused with a 400 that says
what to change. Without these hooks schemathesis would send requests that
break them in its *positive* (schema-valid) mode and report the 400 as
"schema-valid request rejected". Only positive query strings are filtered:
negative cases still all go to the hub. The limits are the hub's defaults.
"""

import math
import os
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.core.parameters import ParameterLocation

MAX_POINTS = 10_000  # analytics.max_points
MAX_SERIES = 100  # analytics.max_series
MAX_BUCKET_S = 3650 * 86_400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _time(v):
    try:
        return datetime.fromisoformat(str(v).replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    except ValueError:
        return None


def _range(q):
    """The effective range: `to` defaults to now, `from` to 24 h before `to`."""
    to = _time(q["to"]) if "to" in q else datetime.now(timezone.utc)
    frm = _time(q["from"]) if "from" in q else (to - timedelta(hours=24) if to else None)
    return frm, to


def _bucket_s(v):
    v = str(v)
    unit = v[-1] if v and v[-1] in UNITS else "s"
    digits = v[:-1] if unit != "s" or v.endswith("s") else v
    try:
        return int(digits) * UNITS[unit]
    except ValueError:
        return None


MAX_LOG_ENTRIES = 256  # cloud-hub/src/api/translog.rs MAX_ENTRIES


def _breaks_a_cross_parameter_rule(path, q):
    # The transparency log (docs/transparency-log.md): proofs name sizes and
    # indexes that must lie within the log, whose size is the hub's data,
    # not the schema's (tests/tests/transparency_log.rs covers them); the
    # inclusion proof takes exactly one of `index` and `leaf_hash`.
    if path.startswith("/api/v1/log/proof/"):
        return True
    if path == "/api/v1/log/entries":
        try:
            start, end = int(q.get("start")), int(q.get("end"))
        except (TypeError, ValueError):
            return True
        return not 0 <= end - start <= MAX_LOG_ENTRIES
    if path == "/api/v1/latest" and not (q.get("gateway") or q.get("device")):
        return True
    if "from" in q or "to" in q or path.startswith("/api/v1/series/") or path == "/api/v1/aggregates":
        frm, to = _range(q)
        if frm is None or to is None or frm >= to:
            return True
    if path == "/api/v1/aggregates":
        if len(str(q.get("series", "")).split(",")) > MAX_SERIES:
            return True
        width = _bucket_s(q.get("bucket", "1h"))
        if width is None or not 0 < width <= MAX_BUCKET_S:
            return True
        frm, to = _range(q)
        if math.ceil((to - frm).total_seconds() / width) > MAX_POINTS:
            return True
        source = q.get("source", "auto")
        if source in ("1m", "1h"):
            unit = 60 if source == "1m" else 3600
            pct = any(f.strip().startswith("p") for f in str(q.get("functions", "")).split(","))
            if pct or width % unit or math.floor(frm.timestamp()) % unit:
                return True
    return False


MAX_BODY = 64 * 1024  # the hub's body limit (cloud-hub/src/api/mod.rs)


def _too_large(case):
    """The hub refuses bodies over 64 KiB with 413 before reading them; the
    content-based checks (ST201) do not count 413 as a refusal, so such
    generated bodies test nothing they could see. 413 itself is tested in
    tests/tests/hub_identity.rs."""
    if case.body is None or not isinstance(case.body, (dict, list)):
        return False
    import json
    try:
        return len(json.dumps(case.body).encode()) > MAX_BODY
    except (TypeError, ValueError):
        return False


@schemathesis.hook
def filter_case(ctx, case):
    if _too_large(case) or _revokes_the_harness_key(case):
        return False
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.QUERY):
        return True
    if case.meta is not None and case.meta.generation.mode.is_positive and _breaks_a_twin_rule(case):
        return False
    return not _breaks_a_cross_parameter_rule(case.operation.path, case.query or {})


# The twin registry's rules between fields of one body (docs/twins.md),
# refused with 422 (or 400) saying what to change.
KINDS_BOUND = {"gateway": ("gateway_id",), "instrument": ("gateway_id", "device_id")}


def _breaks_a_twin_rule(case):
    path, method = case.operation.path, case.method.upper()
    # Only the ETag of an answer can match; any other version is a 412.
    if (case.headers or {}).get("If-Match", "*") != "*":
        return True
    body = case.body if isinstance(case.body, dict) else {}
    q = case.query or {}
    # PostgreSQL's jsonb cannot hold U+0000 anywhere in metadata or
    # attributes; OpenAPI 3.0 cannot say so of a free object.
    import json as _json
    if "\\u0000" in _json.dumps({k: body.get(k) for k in ("metadata", "attributes")}):
        return True
    if path == "/api/v1/twins" and method == "GET":
        if "cursor" in q:  # only a previous page's answer makes one
            return True
        if ("near" in q) != ("radius_m" in q):
            return True
        for key, n in (("bbox", 2), ("near", 1)):
            if key in q:
                xs = [float(x) for x in str(q[key]).split(",")]
                if any(abs(xs[i]) > 90 for i in range(0, 2 * n, 2)) or any(abs(xs[i]) > 180 for i in range(1, 2 * n, 2)):
                    return True
    if path == "/api/v1/twins" and method == "POST":
        if body.get("twin_id") in ("stream",):  # a route's own segment
            return True
        kind = body.get("kind")
        if kind == "sample" and not body.get("serial_number"):
            return True
        if (body.get("latitude") is None) != (body.get("longitude") is None):
            return True
        bound = {k for k in ("gateway_id", "device_id") if body.get(k) is not None}
        allowed = set(KINDS_BOUND.get(kind, ()))
        if not bound <= allowed or (kind == "instrument" and len(bound) == 1):
            return True
    if path.startswith("/api/v1/twin-types") and method in ("POST", "PUT"):
        if path != "/api/v1/twin-types" and case.path_parameters.get("id") != body.get("type_id"):
            return True
        if str(body.get("type_id", "")).startswith("profile:"):
            return True
        import re
        if any(not re.fullmatch(r"[A-Za-z0-9._:@-]{1,128}", k) for k in (body.get("attributes") or {})):
            return True
        names = [m.get("name") for m in body.get("metrics") or []]
        if len(names) != len(set(names)):
            return True
        for m in body.get("metrics") or []:
            if m.get("min") is not None and m.get("max") is not None and m["min"] > m["max"]:
                return True
    if path == "/api/v1/relations" and method == "POST":
        calibration = body.get("kind") == "calibrated_by"
        if (body.get("target") is not None) == calibration or (body.get("target_ref") is not None) != calibration:
            return True
        frm, to = _time(body.get("valid_from") or ""), _time(body.get("valid_to") or "")
        if frm and frm > datetime.now(timezone.utc):
            return True
        if to and (to <= (frm or datetime.now(timezone.utc)) or body.get("kind") in ("contains", "connected_to")):
            return True
    return False


def _revokes_the_harness_key(case):
    """DELETE /api/v1/keys/{id} of the key this run authenticates with.

    The key list links to it, so the stateful phase finds it; revoked, every
    later request is 401 and a third of the API goes untested (the run would
    still pass). Other keys, the ones it creates, it revokes as it likes;
    tests/tests/hub_identity.rs covers revoking one's own key."""
    own = os.environ.get("QI_HARNESS_KEY_ID")
    if not own or case.method.upper() != "DELETE" or case.operation.path != "/api/v1/keys/{id}":
        return False
    return str((case.path_parameters or {}).get("id", "")).removeprefix("key:") == own
