"""Schemathesis hooks for Brigade.

A real client sends a fresh Idempotency-Key for every distinct write it means to make
and reuses a key only to retry the same request. Schemathesis draws header values
independently of bodies, so two different generated bodies can share a key, which the
server rightly refuses with 422 `idempotency-key-reused`. Give every schema-valid key a
fresh value per request; keep the malformed ones, which exercise the 400 path.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[\x21-\x7E]{1,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) and VALID_KEY.match(headers[name]):
            headers[name] = str(uuid.uuid4())
    case.headers = headers
