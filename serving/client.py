"""A REST client for TF Serving's API (ours or TensorFlow's): classify image files by URL."""

import base64
import time
from pathlib import Path

import httpx

from configs import errors

READY_POLL_SECONDS = 0.2


class ClientError(errors.UserError):
    """The server refused a request or did not become ready."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}


def expand_image_paths(items: list[str]) -> list[str]:
    """Files as given, folders expanded (recursively, sorted) to the image files inside them."""
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(
                str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            paths.append(str(path))
        else:
            raise ClientError(f"no such image file or folder: {item}")
    if not paths:
        raise ClientError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {items}")
    return paths


def raise_for_error(response: httpx.Response) -> None:
    """A ClientError naming the request, the HTTP status and the server's `error` text."""
    if response.status_code == 200:
        return
    try:
        payload = response.json()
    except ValueError:
        payload = None
    detail = payload["error"] if isinstance(payload, dict) and "error" in payload else response.text
    raise ClientError(
        f"{response.request.method} {response.request.url} failed with HTTP "
        f"{response.status_code}: {str(detail)[:500]}"
    )


def predict_files(
    url: str,
    model_name: str,
    paths: list[str | Path],
    top_k: int = 3,
    timeout: float = 30,
) -> list[dict]:
    """Classifies image files in one request; per file `{"path", "top": [(class, prob), ...]}`.

    `top` holds the `top_k` most probable classes, most probable first.
    """
    if not paths:
        raise ValueError("paths is empty; give at least one image file")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (received {top_k})")
    instances = [
        {"b64": base64.b64encode(Path(path).read_bytes()).decode("ascii")} for path in paths
    ]
    predict_url = f"{url.rstrip('/')}/v1/models/{model_name}:predict"
    try:
        response = httpx.post(predict_url, json={"instances": instances}, timeout=timeout)
    except httpx.TransportError as error:
        raise ClientError(
            f"could not reach {predict_url} ({error!r}); is the server running at {url}?"
        ) from None
    raise_for_error(response)
    predictions = response.json().get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(paths):
        raise ClientError(
            f"expected {len(paths)} predictions from {url}, received {str(predictions)[:200]}"
        )
    results = []
    for path, prediction in zip(paths, predictions, strict=True):
        ranked = sorted(
            zip(prediction["classes"], prediction["scores"], strict=True),
            key=lambda pair: pair[1],
            reverse=True,
        )
        results.append({"path": str(path), "top": ranked[:top_k]})
    return results


def wait_until_ready(url: str, model_name: str, timeout_s: float = 60) -> dict:
    """Polls `GET /v1/models/<name>` until a version is AVAILABLE; returns the status document."""
    status_url = f"{url.rstrip('/')}/v1/models/{model_name}"
    deadline = time.monotonic() + timeout_s
    last_problem = "no answer yet"
    while True:
        try:
            remaining_s = max(deadline - time.monotonic(), READY_POLL_SECONDS)
            response = httpx.get(status_url, timeout=remaining_s)
            raise_for_error(response)
            status = response.json()
            if any(
                version.get("state") == "AVAILABLE"
                for version in status.get("model_version_status", [])
            ):
                return status
            last_problem = f"status {status}"
        # Servers refuse connections, and TF Serving answers 404, while a model still loads.
        except (httpx.TransportError, ClientError) as error:
            last_problem = str(error)
        if time.monotonic() >= deadline:
            raise ClientError(
                f"model {model_name!r} at {url} was not AVAILABLE within {timeout_s}s "
                f"(last: {last_problem}); check the server's log and --model-path"
            )
        time.sleep(READY_POLL_SECONDS)
