"""Schemathesis hooks and checks for Brigade.

A real client sends a fresh Idempotency-Key for every distinct write it means to make
and reuses a key only to retry the same request. Schemathesis draws header values
independently of bodies, so two different generated bodies can share a key, which the
server rightly refuses with 422 `idempotency-key-reused`. Give every schema-valid key a
fresh value per request; keep the malformed ones, which exercise the 400 path.

Key reuse is then fuzzed on purpose by `idempotency_replays_and_refuses_reuse`: every
create that succeeded is sent again with its key (a retry: the stored answer, byte for
byte, marked `Idempotent-Replayed`) and once more with the same key and different bytes
(another request: 422 `idempotency-key-reused`).

A case that leaves a header out on purpose (at the gateway, "Missing `Authorization`")
is left as it is. Any edit of a case's headers, even writing them back unchanged, makes
Schemathesis revalidate them against the declared header parameters, of which the
security scheme's `Authorization` is none: the case would be relabelled positive and sent
with the `-H` key after all, and then fail "ST203 Missing required header accepted", a
false alarm. (`get_exclude_headers` is what Schemathesis itself asks before it drops the
header; not a documented API, but the version is pinned in run.sh.)
"""

import re
import uuid

import requests
import schemathesis
from schemathesis.transport.prepare import get_exclude_headers

VALID_KEY = re.compile(r"^[\x21-\x7E]{1,255}$")
REUSED = "https://brigade.dev/problems/idempotency-key-reused"


def header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else value
    return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    # The headers this case leaves out on purpose (a negative case); see above.
    if get_exclude_headers(case):
        return
    headers = case.headers or {}
    fresh = {
        name: str(uuid.uuid4())
        for name, value in headers.items()
        if name.lower() == "idempotency-key" and isinstance(value, str) and VALID_KEY.match(value)
    }
    # Only an edit is written back: writing marks the headers for revalidation.
    if fresh:
        case.headers = {**headers, **fresh}


@schemathesis.check
def idempotency_replays_and_refuses_reuse(ctx, response, case):
    request = response.request
    if request.method != "POST" or not 200 <= response.status_code < 300:
        return None
    key = header(request.headers, "idempotency-key")
    if not key or header(response.headers, "idempotent-replayed"):
        return None
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    sent = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length",)}
    again = requests.post(request.url, data=body, headers=sent, timeout=10)
    assert again.status_code == response.status_code, (
        f"a retry with the same key answered {again.status_code}, "
        f"the first {response.status_code}: {again.text[:300]}"
    )
    assert again.content == response.content, "a retry with the same key got a different body"
    assert header(dict(again.headers), "idempotent-replayed") == "true", (
        f"a replay is not marked Idempotent-Replayed: {dict(again.headers)}"
    )
    # The same key with other bytes is another request: refused, whatever the body says.
    other = requests.post(request.url, data=body + b" ", headers=sent, timeout=10)
    assert other.status_code == 422, (
        f"the key reused for other bytes answered {other.status_code}: {other.text[:300]}"
    )
    problem = other.json()
    assert problem.get("type") == REUSED, f"the reuse answered {problem}"
    return None
