"""The serving benchmark's clients: for each API a server offers, a factory of connections that
send one synthetic JPEG per call, and the round trip of a trivial request (the HTTP floor).

A client API is `open_client`, a context manager yielding `call(index)`: one client's
connection, sending image `index % len(images)` per call and raising on a wrong answer.
"""

import base64
import contextlib
import json
import socket

import grpc
import httpx
import serving_model
import tensorflow as tf
from harness import timing
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

TIMEOUT_S = 120.0
JSON_HEADERS = {"content-type": "application/json"}
STALL_MS = 20  # a trivial keep-alive GET slower than this waits on TCP, not on the server
# As curl, urllib3 and gRPC do; httpx leaves Nagle on, which can hold a request body back.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def http_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT_S, transport=httpx.HTTPTransport(socket_options=NODELAY))


def status_url(addresses: dict) -> str:
    return f"{addresses['rest_url']}/v1/models/{serving_model.MODEL_NAME}"


def status_round_trip(addresses: dict, repeats: int = 30) -> float:
    """p50 ms of a trivial GET (model status) on one keep-alive connection: the HTTP floor;
    warns when it is slow enough to be TCP waiting (Nagle and delayed ACK)."""
    with http_client() as client:
        url = status_url(addresses)
        round_trip = timing.median_ms(lambda: client.get(url).raise_for_status(), repeats)
    print(f"bench:   REST round trip of a status GET: {round_trip} ms (p50)")
    if round_trip > STALL_MS:
        print(
            f"bench:   WARNING: a trivial GET takes over {STALL_MS} ms: Nagle and delayed "
            "ACK (is TCP_NODELAY set on the server's connections?)"
        )
    return round_trip


def http_api(post, answer_key: str):
    """open_client for an HTTP API: `post(client, index)` sends request `index`."""

    @contextlib.contextmanager
    def open_client():
        with http_client() as client:

            def call(index: int) -> None:
                response = post(client, index)
                if response.status_code != 200 or not response.json().get(answer_key):
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

            yield call

    return open_client


def grpc_api(target: str, images: list[bytes]):
    """open_client for gRPC PredictionService.Predict, requests built once."""
    requests = []
    for image in images:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = serving_model.MODEL_NAME
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image]))
        requests.append(request)

    @contextlib.contextmanager
    def open_client():
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def call(index: int) -> None:
                response = stub.Predict(requests[index % len(requests)], timeout=TIMEOUT_S)
                classes = len(serving_model.CLASS_NAMES)
                if response.outputs["scores"].tensor_shape.dim[1].size != classes:
                    raise RuntimeError(f"unexpected answer {response}")

            yield call

    return open_client


def build_clients(addresses: dict, images: list[bytes]) -> dict:
    """{api: open_client} of every API the server at `addresses` offers: REST :predict, and
    for imgclf's servers (not the baseline) gRPC Predict and the :classify-images upload."""
    url = status_url(addresses)
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        for image in images
    ]

    def predict(client: httpx.Client, index: int) -> httpx.Response:
        body = bodies[index % len(bodies)]
        return client.post(f"{url}:predict", content=body, headers=JSON_HEADERS)

    def upload(client: httpx.Client, index: int) -> httpx.Response:
        files = [("files", ("image.jpg", images[index % len(images)], "image/jpeg"))]
        return client.post(f"{url}:classify-images", files=files)

    clients = {"rest_predict": http_api(predict, "predictions")}
    if "grpc_target" in addresses:  # not the baseline
        clients["grpc_predict"] = grpc_api(addresses["grpc_target"], images)
        clients["classify_images"] = http_api(upload, "results")
    return clients
