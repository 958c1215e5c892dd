"""Verify a tollgate webhook request (Python 3 standard library only).

Usage in a receiver:

    from verify_webhook import verify, WebhookVerificationError

    try:
        verify(secret, request.headers["Tollgate-Signature"], raw_body)
    except WebhookVerificationError:
        return 400

Pass the body exactly as received (bytes), before any JSON parsing.

Run as a script, it checks one request and exits 0 (valid) or 1 (invalid):

    TOLLGATE_WEBHOOK_SECRET=whsec_... python3 verify_webhook.py '<Tollgate-Signature>' < body
"""

import hashlib
import hmac
import os
import sys
import time


class WebhookVerificationError(Exception):
    """The request is not a fresh, authentic tollgate webhook."""


def verify(secret, header, body, tolerance=300, now=None):
    """Raise WebhookVerificationError unless `header` signs `body` with `secret`.

    secret: the whole `whsec_...` string; header: the Tollgate-Signature value;
    body: the raw request body (bytes); tolerance: seconds allowed between the
    signature's timestamp and `now` (default: the current time), either way.
    """
    timestamp = None
    signatures = []
    for entry in header.split(","):
        key, sep, value = entry.strip().partition("=")
        if not sep:
            raise WebhookVerificationError("malformed header")
        if key == "t":
            if timestamp is not None:
                raise WebhookVerificationError("more than one timestamp")
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp or not all(c in "0123456789" for c in timestamp):
        raise WebhookVerificationError("missing or invalid timestamp")
    if not signatures:
        raise WebhookVerificationError("no v1 signature")

    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance")

    expected = hmac.new(
        secret.encode("utf-8"),
        timestamp.encode("ascii") + b"." + body,
        hashlib.sha256,
    ).hexdigest()
    if not any(
        hmac.compare_digest(expected.encode("ascii"), candidate.encode("utf-8"))
        for candidate in signatures
    ):
        raise WebhookVerificationError("no matching signature")


if __name__ == "__main__":
    try:
        verify(
            os.environ["TOLLGATE_WEBHOOK_SECRET"],
            sys.argv[1],
            sys.stdin.buffer.read(),
        )
    except (WebhookVerificationError, KeyError, IndexError) as err:
        print(f"invalid: {err}", file=sys.stderr)
        sys.exit(1)
    print("valid")
