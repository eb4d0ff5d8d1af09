"""The servers of the serving benchmark, each in a process of its own: imgclf's model server with
batching off ("plain") or on ("batching"), and the baseline, a minimal FastAPI handler that
decodes with Pillow and calls `model.predict` per request.

The benchmark starts each as this script (`python serving_servers.py --serve ROLE --work DIR`),
which says READY with its addresses once it serves and stops when its stdin closes.
"""

import argparse
import base64
import contextlib
import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

import fastapi
import keras
import numpy as np
import serving_model
import uvicorn
from harness import processes
from PIL import Image

from configs import schema
from serving.server import server

ROLES = ("baseline", "plain", "batching")
BATCHING_ON = {"enabled": True, "max_batch_size": 32, "batch_timeout_ms": 2}


def build_baseline_app(model: keras.Model) -> fastapi.FastAPI:
    """What a quick hand-written service does: Pillow decode, numpy, model.predict per request."""
    app = fastapi.FastAPI()
    size = serving_model.IMAGE_SHAPE[:2]

    @app.get("/v1/models/{name}")
    def status(name: str) -> dict:
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, payload: dict) -> dict:
        data = base64.b64decode(payload["instances"][0]["b64"])
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.BILINEAR)
        pixels = np.asarray(image, np.float32)[np.newaxis] / 255.0
        scores = model.predict(pixels, verbose=0)[0]
        return {"predictions": [{"scores": scores.tolist(), "classes": serving_model.CLASS_NAMES}]}

    return app


def serve_baseline(work: Path) -> None:
    model = keras.saving.load_model(work / "model.keras")
    model.predict(np.zeros((1, *serving_model.IMAGE_SHAPE), np.float32), verbose=0)  # trace
    # As uvicorn.run(host=..., port=...) binds: an IPPROTO_TCP socket, so that asyncio turns
    # on TCP_NODELAY for each connection (it skips sockets made with proto 0).
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.bind(("127.0.0.1", 0))
    web = uvicorn.Server(uvicorn.Config(build_baseline_app(model), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    while not web.started:
        time.sleep(0.01)
    processes.announce_ready({"rest_url": f"http://127.0.0.1:{listening.getsockname()[1]}"})
    processes.wait_for_stop()
    web.should_exit = True
    thread.join(10)


def serve_imgclf(work: Path, batching: dict) -> None:
    name = serving_model.MODEL_NAME
    config = schema.ServingConfig(
        model_name=name, port=0, grpc_port=0, poll_seconds=0, batching=batching
    )
    manager = server.build_manager(config, work / "export", None, name)
    model_server = server.ModelServer(manager, config).start()
    served = manager.resolve(name)
    processes.announce_ready(
        {
            "rest_url": model_server.rest_url,
            "grpc_target": model_server.grpc_target,
            "runtime": f"{served.runtime} ({served.runtime_reason})",
        }
    )
    processes.wait_for_stop()
    model_server.stop()


def serve(role: str, work: Path) -> None:
    """Serves `role` until stdin closes: the baseline from work/model.keras, imgclf from
    work/export."""
    if role == "baseline":
        serve_baseline(work)
    else:
        serve_imgclf(work, BATCHING_ON if role == "batching" else {"enabled": False})


def start(stack: contextlib.ExitStack, role: str, work: Path) -> tuple[dict, int]:
    """Starts the `role` server for the rest of `stack`: its addresses and process id."""
    print(f"bench: starting the {role} server", flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", role, "--work", str(work)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = work / f"server-{role}.log"
    addresses, pid = stack.enter_context(processes.ready_server(command, log, env))
    if "runtime" in addresses:
        print(f"bench:   serving with {addresses.pop('runtime')}")
    return addresses, pid


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", choices=ROLES, required=True)
    parser.add_argument("--work", type=Path, required=True)
    arguments = parser.parse_args()
    serve(arguments.serve, arguments.work)
