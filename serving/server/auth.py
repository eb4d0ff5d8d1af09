"""Optional bearer-token authentication (serving.auth) for both APIs: an ASGI middleware for REST
and a gRPC server interceptor, one token compared in constant time, and the endpoints a probe
or Prometheus may reach without it."""

import hmac
import json
import os
from pathlib import Path

import grpc

from configs import schema
from core import errors
from serving.server import metrics

MIN_TOKEN_CHARS = 16
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
DOCS_ASSETS = "/static-offline-docs/"  # fastapi_offline's Swagger UI and ReDoc files
GRPC_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
CHALLENGE = 'Bearer realm="imgclf"'
MISSING = "authentication required: send the header 'Authorization: Bearer <token>'"
WRONG = "the bearer token does not match serving.auth's token"


class TokenError(errors.UserError):
    """serving.auth names a token that cannot be read or is too weak to use."""


def load_token(config: schema.AuthConfig) -> bytes | None:
    """The token serving.auth names (None when authentication is off)."""
    if config.token_file is not None:
        path = Path(config.token_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise TokenError(
                f"cannot read serving.auth.token_file {path} ({error.strerror}); "
                "point it at the file holding the token"
            ) from None
        token, source = (lines[0].strip() if lines else ""), f"serving.auth.token_file {path}"
    elif config.token_env is not None:
        token = os.environ.get(config.token_env, "").strip()
        source = f"the environment variable {config.token_env} (serving.auth.token_env)"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{source} holds {'no token' if not token else 'a token under 16 characters'}; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token.encode("utf-8")


def refusal(authorization: str | None, token: bytes) -> str | None:
    """Why a request with this Authorization value is refused, or None when it may pass."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return MISSING
    if not hmac.compare_digest(credential.strip().encode("utf-8"), token):
        return WRONG
    return None


def is_public_path(method: str, path: str, public: list[str]) -> bool:
    if "metrics" in public and path == metrics.METRICS_PATH:
        return True
    if "docs" in public and (path in DOCS_PATHS or path.startswith(DOCS_ASSETS)):
        return True
    # Status, not metadata: GET /v1/models/<m>[/versions/<n>|/labels/<l>].
    return (
        "status" in public
        and method == "GET"
        and path.startswith("/v1/models/")
        and not path.endswith("/metadata")
    )


class BearerAuth:
    """Pure ASGI middleware: a request outside the public endpoints without the token gets
    401 with TF Serving's error body and a WWW-Authenticate challenge."""

    def __init__(self, app, token: bytes, public: list[str]):
        self.app = app
        self.token = token
        self.public = public

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_public_path(scope["method"], scope["path"], self.public):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        reason = refusal(authorization, self.token)
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", CHALLENGE.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class GrpcBearerAuth(grpc.ServerInterceptor):
    """Every gRPC call but GetModelStatus (when status is public) needs the token in the
    `authorization` metadata; others end UNAUTHENTICATED before reaching a servicer."""

    def __init__(self, token: bytes, public: list[str]):
        self.token = token
        self.public_methods = {GRPC_STATUS_METHOD} if "status" in public else set()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method in self.public_methods:
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        reason = refusal(metadata.get("authorization"), self.token)
        if reason is None:
            return continuation(handler_call_details)

        def refuse(_request, context: grpc.ServicerContext):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        return grpc.unary_unary_rpc_method_handler(refuse)
