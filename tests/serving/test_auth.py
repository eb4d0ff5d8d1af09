"""serving.auth and serving.tls on a real server: bearer tokens over REST and gRPC (with the
official stubs), the endpoints left public for probes and Prometheus, and HTTPS / gRPC over TLS
with a certificate the test makes."""

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from configs import schema
from serving.server import auth, server
from tests.conftest import MODEL_NAME, b64, image_request

pytestmark = pytest.mark.serving

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def guarded(start_server, export_base, token_file):
    return start_server(model_path=export_base, auth={"token_file": str(token_file)})


def bearer(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_rest_predict_needs_the_token(guarded, png_images):
    url = f"{guarded.rest_url}/v1/models/{MODEL_NAME}:predict"
    body = {"instances": [b64(png_images[0])]}

    anonymous = httpx.post(url, json=body)
    wrong = httpx.post(url, json=body, headers=bearer("x" * len(TOKEN)))
    basic = httpx.post(url, json=body, headers={"Authorization": f"Basic {TOKEN}"})
    allowed = httpx.post(url, json=body, headers=bearer())

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in anonymous.json()["error"]
    assert wrong.status_code == 401 and "does not match" in wrong.json()["error"]
    assert basic.status_code == 401
    assert allowed.status_code == 200 and allowed.json()["predictions"]


@pytest.mark.parametrize(
    ("path", "public"),
    [
        (f"/v1/models/{MODEL_NAME}", True),  # status: readiness and liveness probes
        (f"/v1/models/{MODEL_NAME}/versions/1", True),
        ("/monitoring/prometheus/metrics", True),
        (f"/v1/models/{MODEL_NAME}/metadata", False),
        (f"/monitoring/models/{MODEL_NAME}", False),
        ("/docs", False),
        ("/openapi.json", False),
    ],
)
def test_only_status_and_metrics_are_public_by_default(guarded, path, public):
    anonymous = httpx.get(f"{guarded.rest_url}{path}")
    allowed = httpx.get(f"{guarded.rest_url}{path}", headers=bearer())

    assert (anonymous.status_code == 200) is public, anonymous.text
    assert allowed.status_code == 200, allowed.text


def test_the_openapi_document_declares_the_bearer_scheme(guarded):
    spec = httpx.get(f"{guarded.rest_url}/openapi.json", headers=bearer()).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]


def test_grpc_needs_the_token_but_for_model_status(guarded, png_images):
    channel = grpc.insecure_channel(guarded.grpc_target)
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request = image_request([png_images[0]])
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL_NAME

    with pytest.raises(grpc.RpcError) as refused:
        predict.Predict(request, timeout=30)
    with pytest.raises(grpc.RpcError) as wrong:
        predict.Predict(request, timeout=30, metadata=[("authorization", "Bearer nope")])
    answered = predict.Predict(request, timeout=30, metadata=[("authorization", f"Bearer {TOKEN}")])
    status = models.GetModelStatus(status_request, timeout=30)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Authorization: Bearer" in refused.value.details()
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert answered.outputs["scores"].tensor_shape.dim[0].size == 1
    assert status.model_version_status[0].version == 1
    channel.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_imgclf_predict_sends_the_token_serving_auth_names(
    guarded, token_file, tmp_path, png_images, transport
):
    (tmp_path / "a.png").write_bytes(png_images[0])
    server_url = guarded.rest_url if transport == "rest" else f"grpc://{guarded.grpc_target}"
    command = [sys.executable, "-m", "cli", "predict", str(tmp_path / "a.png")]
    command += ["--server", server_url, "--model-name", MODEL_NAME]

    without = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    with_token = subprocess.run(
        [*command, "--set", f"serving.auth.token_file={token_file}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert without.returncode == 2 and "Bearer" in without.stderr, without.stderr
    assert with_token.returncode == 0, with_token.stderr
    assert "a.png" in with_token.stdout


def test_docs_can_be_made_public_with_their_assets(start_server, export_base, token_file):
    documented = start_server(
        model_path=export_base,
        auth={"token_file": str(token_file), "public": ["status", "metrics", "docs"]},
    )
    page = httpx.get(f"{documented.rest_url}/docs")
    assets = re.findall(r'(?:src|href)="(/static-offline-docs/[^"]+)"', page.text)

    assert page.status_code == 200 and assets
    for path in [*assets, "/openapi.json", "/redoc"]:
        assert httpx.get(f"{documented.rest_url}{path}").status_code == 200, path
    predict = httpx.post(f"{documented.rest_url}/v1/models/{MODEL_NAME}:predict", json={})
    assert predict.status_code == 401


def test_nothing_is_public_when_public_is_empty(start_server, export_base, token_file):
    closed = start_server(
        model_path=export_base, auth={"token_file": str(token_file), "public": []}
    )
    for path in (f"/v1/models/{MODEL_NAME}", "/monitoring/prometheus/metrics"):
        assert httpx.get(f"{closed.rest_url}{path}").status_code == 401
    channel = grpc.insecure_channel(closed.grpc_target)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL_NAME
    with pytest.raises(grpc.RpcError) as refused:
        model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def test_the_token_can_come_from_an_environment_variable(monkeypatch):
    monkeypatch.setenv("IMGCLF_TEST_TOKEN", f"  {TOKEN}\n")
    assert auth.load_token(schema.AuthConfig(token_env="IMGCLF_TEST_TOKEN")) == TOKEN.encode()
    assert auth.load_token(schema.AuthConfig()) is None


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"token_env": "IMGCLF_UNSET_TOKEN"}, "holds no token; generate one"),
        ({"token_file": "short"}, "a token under 16 characters"),
        ({"token_file": "missing"}, "cannot read serving.auth.token_file"),
    ],
)
def test_a_token_that_cannot_be_used_stops_serve_with_one_line(
    tmp_path, export_base, setting, expected
):
    (tmp_path / "short").write_text("abc\n")
    overrides = []
    for key, value in setting.items():
        value = str(tmp_path / value) if key == "token_file" else value
        overrides += ["--set", f"serving.auth.{key}={value}"]
    result = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--model-path", str(export_base), "--port", "0"]
        + ["--no-grpc", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_serves_https_and_grpc_over_tls(start_server, export_base, certificate, png_images):
    cert, key = certificate
    secure = start_server(
        model_path=export_base, tls={"cert_file": str(cert), "key_file": str(key)}
    )
    assert secure.rest_url.startswith("https://")

    trusted = ssl.create_default_context(cafile=str(cert))
    status = httpx.get(f"{secure.rest_url}/v1/models/{MODEL_NAME}", verify=trusted)
    with pytest.raises(httpx.TransportError):
        httpx.get(secure.rest_url.replace("https://", "http://") + f"/v1/models/{MODEL_NAME}")
    channel = grpc.secure_channel(
        secure.grpc_target, grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    )
    answered = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        image_request([png_images[0]]), timeout=30
    )

    assert status.status_code == 200
    assert answered.outputs["scores"].tensor_shape.dim[0].size == 1
    channel.close()


@pytest.mark.parametrize("scheme", ["https", "grpcs"])
def test_imgclf_predict_reaches_a_tls_server_trusting_ssl_cert_file(
    start_server, export_base, certificate, png_images, tmp_path, scheme
):
    cert, key = certificate
    secure = start_server(
        model_path=export_base, tls={"cert_file": str(cert), "key_file": str(key)}
    )
    where = secure.rest_url if scheme == "https" else f"grpcs://{secure.grpc_target}"
    (tmp_path / "a.png").write_bytes(png_images[0])
    command = [sys.executable, "-m", "cli", "predict", str(tmp_path / "a.png"), "--server", where]
    command += ["--model-name", MODEL_NAME]

    def run(**env):
        return subprocess.run(
            command,
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    untrusted, trusted = run(), run(SSL_CERT_FILE=str(cert))

    assert untrusted.returncode == 2, untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert "a.png" in trusted.stdout


def test_a_key_that_does_not_match_the_certificate_is_one_clear_error(
    tmp_path, export_base, certificate
):
    cert, _ = certificate
    other_key = tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other_key)],
        check=True,
        capture_output=True,
    )
    config = schema.ServingConfig(
        host="127.0.0.1",
        port=0,
        grpc_port=None,
        tls={"cert_file": str(cert), "key_file": str(other_key)},
    )
    models_manager = server.build_manager(config, export_base, None, MODEL_NAME)
    with pytest.raises(server.ServerStartError, match="not a PEM certificate and its key"):
        server.ModelServer(models_manager, config)
