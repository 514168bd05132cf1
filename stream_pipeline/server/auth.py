"""Bearer-token authentication (WHIP and WHEP send ``Authorization: Bearer <token>``)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

__all__ = ["check_token", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (no token needed then)."""
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def check_token(request: Request, token: str | None) -> None:
    """Raise 401 unless the request carries ``token`` (nothing to check when it is ``None``)."""
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401, "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    # Constant time: the token is the only secret between this server and the network.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(
            401, "wrong bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
