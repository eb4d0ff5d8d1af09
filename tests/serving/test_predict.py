"""`imgclf predict`: files, folders and buckets through REST, gRPC or a local SavedModel, against
real servers (and a real moto S3) on 127.0.0.1."""

import csv
import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import cli
from configs import schema
from core import saved_models
from registry import store
from serving import client, predict
from tests.conftest import CLASS_NAMES, MODEL_NAME, encode_png, export_dense_model
from tests.transforms.sources import conftest as source_fixtures

pytestmark = pytest.mark.serving

s3_endpoint = source_fixtures.s3_endpoint  # a real moto S3 server, shared with the ingest tests

# Relative path -> bytes: PNGs of several sizes and modes, one nested, and a file that the
# folder listing skips by its suffix.
IMAGES = {
    "a/0.png": encode_png(0, (32, 32), "L"),
    "a/1.png": encode_png(1, (48, 20), "RGB"),
    "b/2.png": encode_png(2, (7, 9), "RGBA"),
    "b/deep/3.png": encode_png(3, (32, 32), "RGB"),
    "4.png": encode_png(4, (64, 64), "L"),
}
NOT_AN_IMAGE = b"hello, I am not a PNG"
OTHER_CLASSES = ["x", "y", "z"]


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


def unused_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_files(tmp_path_factory.mktemp("images"), {**IMAGES, "notes.txt": b"skipped"})


@pytest.fixture(scope="module")
def server(start_server, export_base: Path):
    return start_server(model_path=export_base)


@pytest.fixture(scope="module")
def targets(server, export_base: Path) -> dict[str, list[str]]:
    """CLI arguments per target: REST, gRPC and the SavedModel in this process."""
    return {
        "rest": ["--server", server.rest_url, "--model-name", MODEL_NAME],
        "grpc": ["--server", f"grpc://{server.grpc_target}", "--model-name", MODEL_NAME],
        "local": ["--model-path", str(export_base), "--model-name", MODEL_NAME],
    }


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected_scores(export_base: Path, images: list[bytes]) -> np.ndarray:
    signature = tf.saved_model.load(str(export_base / "1")).signatures["serving_default"]
    return signature(image_bytes=tf.constant(images))["scores"].numpy()


# --- targets agree ---


def test_rest_grpc_and_local_give_the_same_answers(
    capsys, targets, images_dir: Path, export_base: Path, tmp_path: Path
):
    results = {}
    for name, target in targets.items():
        output = tmp_path / f"{name}.jsonl"
        code, _, err = run_cli(
            capsys, str(images_dir), *target, "--batch-size", "2", "--output", str(output)
        )
        assert code == 0, err
        results[name] = read_jsonl(output)

    expected_paths = [str(images_dir / relative) for relative in sorted(IMAGES)]
    direct = expected_scores(export_base, [IMAGES[relative] for relative in sorted(IMAGES)])
    for name, rows in results.items():
        assert [row["path"] for row in rows] == expected_paths, name
        assert [row["label"] for row in rows] == [CLASS_NAMES[i] for i in direct.argmax(1)], name
        for row, scores in zip(rows, direct, strict=True):
            by_label = {top["label"]: top["score"] for top in row["top"]}
            np.testing.assert_allclose(
                [by_label[label] for label in CLASS_NAMES], scores, atol=1e-6
            )
            assert row["score"] == row["top"][0]["score"] == max(by_label.values())
            assert "error" not in row


# --- outputs ---


def test_jsonl_rows(capsys, targets, images_dir: Path, tmp_path: Path):
    output = tmp_path / "results.jsonl"

    code, out, _ = run_cli(
        capsys, str(images_dir), *targets["rest"], "--top-k", "2", "--output", str(output)
    )

    rows = read_jsonl(output)
    assert code == 0
    assert len(rows) == len(IMAGES)
    for row in rows:
        assert set(row) == {"path", "top", "label", "score"}
        assert len(row["top"]) == 2 and set(row["top"][0]) == {"label", "score"}
        assert row["top"][0]["score"] >= row["top"][1]["score"]
        assert row["label"] in CLASS_NAMES
    assert out.strip().endswith(f"-> {output}")


def test_csv_rows(capsys, targets, images_dir: Path, tmp_path: Path):
    output = tmp_path / "results.csv"

    code, _, _ = run_cli(capsys, str(images_dir), *targets["grpc"], "--output", str(output))

    with output.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert code == 0
    assert list(rows[0]) == ["path", "label", "score", "top_k", "error"]
    assert len(rows) == len(IMAGES)
    for row in rows:
        top = [pair.split(":") for pair in row["top_k"].split(";")]
        assert len(top) == 3
        assert top[0] == [row["label"], row["score"]]
        assert [float(score) for _, score in top] == sorted(
            (float(score) for _, score in top), reverse=True
        )
        assert row["error"] == ""


def test_lines_on_stdout_by_default_with_the_summary(capsys, targets, images_dir: Path, server):
    code, out, err = run_cli(capsys, str(images_dir), *targets["grpc"], "--top-k", "1")

    *lines, summary = out.strip().splitlines()
    assert code == 0, err
    assert len(lines) == len(IMAGES)
    assert re.fullmatch(rf"{re.escape(str(images_dir / '4.png'))}: [abc] 0\.\d{{3}}", lines[0])
    assert summary == (
        f"predict: 5 images (0 errors) classified by {MODEL_NAME} v1 at grpc://{server.grpc_target}"
    )


def test_format_without_output_writes_rows_to_stdout(capsys, targets, images_dir: Path):
    code, out, err = run_cli(capsys, str(images_dir / "a"), *targets["rest"], "--format", "jsonl")

    assert code == 0
    assert [json.loads(line)["path"] for line in out.splitlines()] == [
        str(images_dir / "a" / "0.png"),
        str(images_dir / "a" / "1.png"),
    ]
    assert err.startswith("predict: 2 images (0 errors)")


# --- bad files ---


@pytest.mark.parametrize("target", ["rest", "grpc", "local"])
def test_a_file_that_is_not_an_image_is_an_error_row(capsys, targets, tmp_path: Path, target: str):
    folder = write_files(
        tmp_path / "mixed",
        {"0.png": IMAGES["a/0.png"], "1-broken.png": NOT_AN_IMAGE, "2.png": IMAGES["a/1.png"]},
    )
    notes = write_files(tmp_path, {"notes.txt": NOT_AN_IMAGE}) / "notes.txt"
    output = tmp_path / "results.jsonl"

    code, out, _ = run_cli(
        capsys, str(folder), str(notes), *targets[target], "--output", str(output)
    )

    rows = read_jsonl(output)
    prefix = {"rest": "HTTP 400: ", "grpc": "INVALID_ARGUMENT: ", "local": ""}[target]
    assert code == 0
    assert [Path(row["path"]).name for row in rows] == [
        "0.png",
        "1-broken.png",
        "2.png",
        "notes.txt",
    ]
    assert [row["label"] in CLASS_NAMES for row in rows] == [True, False, True, False]
    for bad in (rows[1], rows[3]):
        assert re.match(f"{prefix}could not decode the images", bad["error"]), bad["error"]
        assert bad["top"] == [] and bad["label"] is None
    assert "predict: 4 images (2 errors) classified by" in out


class Recording:
    """A predictor that records the size of every call it passes on."""

    def __init__(self, inner):
        self.inner = inner
        self.model_name, self.version, self.where = inner.model_name, inner.version, inner.where
        self.calls: list[int] = []

    def predict(self, images: list[bytes]) -> client.Answer:
        self.calls.append(len(images))
        return self.inner.predict(images)

    def close(self) -> None:
        self.inner.close()


def test_batches_stream_and_a_refused_batch_is_retried_image_by_image(
    export_base: Path, tmp_path: Path, monkeypatch
):
    files = {f"{index:02d}.png": IMAGES["a/0.png"] for index in range(10)}
    files["04.png"] = NOT_AN_IMAGE
    folder = write_files(tmp_path / "images", files)
    recording = Recording(predict.LocalModel(str(export_base)))
    output = tmp_path / "out.jsonl"
    reads = []
    read_images = predict.read_images
    monkeypatch.setattr(
        predict, "read_images", lambda refs: reads.append(len(refs)) or read_images(refs)
    )

    refs = predict.list_images([str(folder)], schema.DataConfig())
    with predict.open_writer(str(output)) as writer:
        summary = predict.run(recording, refs, writer, batch_size=4)

    # Read and sent per batch: 0-3, 4-7 (refused, then one by one), 8-9.
    assert reads == [4, 4, 2]
    assert recording.calls == [4, 4, 1, 1, 1, 1, 2]
    assert (summary.images, summary.errors) == (10, 1)
    assert [("error" in row) for row in read_jsonl(output)] == [i == 4 for i in range(10)]


class Flaky(Recording):
    """Unavailable for the first `failures` calls (or for ever: -1)."""

    def __init__(self, inner, failures: int):
        super().__init__(inner)
        self.failures = failures

    def predict(self, images: list[bytes]) -> client.Answer:
        self.calls.append(len(images))
        if self.failures and len(self.calls) > 1:
            self.failures -= 1
            raise client.Unavailable("could not reach the server")
        return self.inner.predict(images)


def test_an_unavailable_server_is_retried_then_stops_the_run(
    export_base: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(predict, "RETRY_BACKOFF_S", 0)
    folder = write_files(tmp_path / "images", {f"{i}.png": IMAGES["a/0.png"] for i in range(6)})
    refs = predict.list_images([str(folder)], schema.DataConfig())
    model = predict.LocalModel(str(export_base))
    output = tmp_path / "out.jsonl"

    with predict.open_writer(str(output)) as writer:
        summary = predict.run(Flaky(model, failures=2), refs, writer, batch_size=4)
    assert (summary.images, summary.errors) == (6, 0)

    with pytest.raises(client.ClientError, match=r"stopped after 4 of 6 images; the first 4 "):
        with predict.open_writer(str(output)) as writer:
            predict.run(Flaky(model, failures=-1), refs, writer, batch_size=4)
    assert len(read_jsonl(output)) == 4


def test_an_unreadable_file_is_an_error_row(export_base: Path, tmp_path: Path):
    folder = write_files(tmp_path / "images", {"0.png": IMAGES["a/0.png"]})
    refs = [*predict.list_images([str(folder)], schema.DataConfig())]
    refs.append(predict.ImageRef(str(folder / "gone.png"), str(folder / "gone.png")))
    output = tmp_path / "out.jsonl"

    with predict.open_writer(str(output)) as writer:
        summary = predict.run(predict.LocalModel(str(export_base)), refs, writer)

    rows = read_jsonl(output)
    assert summary.errors == 1
    assert "could not read" in rows[1]["error"] and "gone.png" in rows[1]["error"]


# --- buckets ---


@pytest.mark.parametrize("endpoint_from", ["environment", "config"])
def test_an_s3_prefix_is_listed_and_read_in_batches(
    capsys, targets, s3_endpoint: str, tmp_path: Path, monkeypatch, endpoint_from: str
):
    import boto3

    bucket = f"predict-{endpoint_from}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for relative, content in IMAGES.items():
        s3.put_object(Bucket=bucket, Key=f"incoming/{relative}", Body=content)
    s3.put_object(Bucket=bucket, Key="incoming/readme.md", Body=b"skipped")
    s3.put_object(Bucket=bucket, Key="elsewhere/9.png", Body=IMAGES["4.png"])
    if endpoint_from == "environment":
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        options = []
    else:
        options = ["--set", f"data.storage_options.endpoint_url={s3_endpoint}"]
    output = tmp_path / "s3.jsonl"

    code, out, err = run_cli(
        capsys,
        f"s3://{bucket}/incoming",
        *targets["rest"],
        *options,
        "--batch-size",
        "2",
        "--output",
        str(output),
    )
    local = tmp_path / "local.jsonl"
    folder = write_files(tmp_path / "copy", IMAGES)
    assert run_cli(capsys, str(folder), *targets["rest"], "--output", str(local))[0] == 0

    rows = read_jsonl(output)
    assert code == 0, err
    assert [row["path"] for row in rows] == [
        f"s3://{bucket}/incoming/{relative}" for relative in sorted(IMAGES)
    ]
    assert [row["label"] for row in rows] == [row["label"] for row in read_jsonl(local)]
    assert "predict: 5 images (0 errors)" in out


def test_a_missing_bucket_is_a_clear_error(capsys, targets, s3_endpoint: str):
    code, _, err = run_cli(
        capsys,
        "s3://no-such-bucket/images",
        *targets["rest"],
        "--set",
        f"data.storage_options.endpoint_url={s3_endpoint}",
    )

    assert code == 2
    assert err.startswith("error: ") and "s3://no-such-bucket/images" in err
    assert "Traceback" not in err


# --- versions and labels ---


@pytest.fixture(scope="module")
def labelled_server(start_server, tmp_path_factory: pytest.TempPathFactory):
    """digits 1 (classes a-c, production) and 2 (classes x-z, staging), from a models.config."""
    root = tmp_path_factory.mktemp("label-src")
    model_store = tmp_path_factory.mktemp("label-store")
    store.push(model_store, export_dense_model(root / "1", 32, 1, CLASS_NAMES), MODEL_NAME)
    store.push(model_store, export_dense_model(root / "2", 32, 1, OTHER_CLASSES), MODEL_NAME)
    store.promote(model_store, MODEL_NAME, 1, "production", force=True)
    store.promote(model_store, MODEL_NAME, 2, "staging")
    return start_server(model_config_file=model_store / store.CONFIG_FILE)


@pytest.mark.parametrize("api", ["rest", "grpc"])
@pytest.mark.parametrize(
    "choice, version, classes",
    [
        ([], 2, OTHER_CLASSES),
        (["--label", "production"], 1, CLASS_NAMES),
        (["--label", "staging"], 2, OTHER_CLASSES),
        (["--version", "1"], 1, CLASS_NAMES),
    ],
)
def test_labels_and_versions_route_to_their_version(
    capsys, labelled_server, images_dir: Path, api: str, choice, version: int, classes
):
    url = labelled_server.rest_url if api == "rest" else f"grpc://{labelled_server.grpc_target}"

    code, out, err = run_cli(
        capsys, str(images_dir), "--server", url, "--model-name", MODEL_NAME, *choice
    )

    *lines, summary = out.strip().splitlines()
    assert code == 0, err
    assert all(line.split(": ")[1][0] in "".join(classes) for line in lines)
    assert f"classified by {MODEL_NAME} v{version} at {url}" in summary


def test_an_unknown_label_is_a_clear_error(capsys, labelled_server, images_dir: Path):
    code, _, err = run_cli(
        capsys,
        str(images_dir),
        "--server",
        f"grpc://{labelled_server.grpc_target}",
        "--model-name",
        MODEL_NAME,
        "--label",
        "canary",
    )

    assert code == 2
    assert "NOT_FOUND: Unrecognized servable version label: canary" in err


# --- local model paths ---


def test_a_local_model_path_can_be_a_base_a_version_or_a_run(export_base: Path, tmp_path: Path):
    base = tmp_path / "digits"
    for version in ("1", "2"):
        shutil.copytree(export_base / "1", base / version)
    run = tmp_path / "runs" / "20260101-000000-digits-abc123"
    shutil.copytree(export_base / "1", run / "export" / "3")

    assert predict.resolve_model_path(str(base)) == ("digits", 2, base / "2")
    assert predict.resolve_model_path(str(base), 1) == ("digits", 1, base / "1")
    assert predict.resolve_model_path(str(base / "1")) == ("digits", 1, base / "1")
    assert predict.resolve_model_path(str(run)) == (run.name, 3, run / "export" / "3")
    assert predict.resolve_model_path(str(run / "export")) == (run.name, 3, run / "export" / "3")
    with pytest.raises(
        saved_models.SavedModelNotFound, match=r"no version 7 under .*versions: \[1, 2\]"
    ):
        predict.resolve_model_path(str(base), 7)


def test_local_predict_end_to_end(capsys, export_base: Path, images_dir: Path):
    code, out, _ = run_cli(capsys, str(images_dir), "--model-path", str(export_base))

    assert code == 0
    assert out.strip().splitlines()[-1] == (
        f"predict: 5 images (0 errors) classified by {export_base.name} v1 at {export_base / '1'}"
    )


# --- user errors: one line, exit status 2 ---


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_an_unreachable_server_is_a_clear_error(capsys, images_dir: Path, scheme: str):
    server = f"{scheme}://127.0.0.1:{unused_port()}"

    code, out, err = run_cli(capsys, str(images_dir), "--server", server, "--model-name", "m")

    assert code == 2
    assert re.match(rf"error: could not reach .* is the server running at {server}\?", err)
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--server", "127.0.0.1:8500"],
            r"server must be http\(s\)://host:8501 .* or grpc\(s\)://",
        ),
        (["--output", "results.txt"], r"cannot tell the format of results\.txt"),
        (["--batch-size", "0"], r"--batch-size must be >= 1 \(received 0\)"),
        (["--model-path", "{base}", "--label", "production"], "--label production needs --server"),
        (["--model-path", "{missing}"], "model path .* is not a folder"),
    ],
)
def test_user_errors(capsys, targets, images_dir: Path, export_base: Path, argv, message):
    base = targets["rest"] if "--model-path" not in argv and "--server" not in argv else []
    argv = [part.format(base=export_base, missing=export_base / "nope") for part in argv]

    code, _, err = run_cli(capsys, str(images_dir), *base, *argv)

    assert code == 2
    assert re.search(message, err), err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_image_path_is_a_clear_error(capsys, targets, tmp_path: Path):
    code, _, err = run_cli(capsys, str(tmp_path / "nope"), *targets["rest"])

    assert code == 2
    assert err.strip() == f"error: no such image file or folder: {tmp_path / 'nope'}"
