"""Run folders in a bucket: a digits run with train.runs_dir on a real moto S3 server, killed
after epoch 1 and resumed from the bucket; the same mirror against a GCS emulator."""

import csv
import io
import json
import signal
import tempfile

import pytest

from configs import loader
from core import locations, run_layout, saved_models
from tests.conftest import DIGITS_CONFIG
from tests.trainer import test_resume
from tests.transforms.sources import conftest as source_fixtures
from tests.transforms.sources import test_gcs
from tfx_pipeline import flow
from trainer import mirror

pytestmark = [pytest.mark.slow, pytest.mark.beam]

s3_endpoint = source_fixtures.s3_endpoint  # a real moto S3 server, shared with the source tests
s3_client = source_fixtures.s3_client
gcs_endpoint = test_gcs.gcs_endpoint
BUCKET = "imgclf-runs"
RUN_ID = "remote"
EPOCHS = 2


@pytest.fixture(autouse=True)
def staging_in_tmp_path(tmp_path, monkeypatch):
    """Staging copies land under the test's folder, here and in the processes it starts."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def bucket_env(s3_endpoint, s3_client, monkeypatch):
    """s3://BUCKET, reachable from this process and from the ones it starts."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3_client.create_bucket(Bucket=BUCKET)
    return s3_client


def keys(s3_client, prefix: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def read_key(s3_client, key: str) -> str:
    return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def test_run_in_s3_survives_a_kill_and_resumes_from_the_bucket(
    tmp_path, ingested_digits, digits_dir, bucket_env
):
    s3 = bucket_env
    overrides = [
        f"data.source={digits_dir}",
        f"data.output_dir={ingested_digits.path.parent}",
        f"train.runs_dir=s3://{BUCKET}/runs",
        f"train.run_id={RUN_ID}",
        f"train.epochs={EPOCHS}",
        "train.keep_checkpoints=1",
        *test_resume.FAST,
    ]
    command = test_resume.train_command(
        test_resume.Digits(tmp_path, digits_dir, ingested_digits.path, 0), RUN_ID, *overrides
    )
    # Epoch 2 starts only after epoch 1's checkpoint reached the bucket.
    status, lines = test_resume.train(command, kill_when=lambda line: line == "Epoch 2/2")
    assert status == -signal.SIGKILL, "\n".join(lines[-30:])
    prefix = f"runs/{RUN_ID}/"
    after_kill = keys(s3, prefix)
    steps = ingested_digits.dataset["splits"]["train"]["count"] // test_resume.BATCH_SIZE
    assert f"{prefix}checkpoints/ckpt-{steps}.index" in after_kill
    assert f"{prefix}checkpoints/checkpoint" in after_kill
    assert json.loads(read_key(s3, f"{prefix}run.json"))["status"] == "running"
    assert not any(key.startswith(f"{prefix}export/") for key in after_kill)

    # As `imgclf train` runs it: the evaluator's report then reaches the bucket too.
    result = flow.run(loader.load(DIGITS_CONFIG, overrides))

    assert result.training["resumed_from"].endswith(f"ckpt-{steps}")
    assert result.training["epochs_run"] == EPOCHS
    final = keys(s3, prefix)
    # keep_checkpoints=1: the epoch 1 checkpoint is gone from the bucket as from the folder.
    assert [k for k in final if k.startswith(f"{prefix}checkpoints/ckpt-")] == [
        f"{prefix}checkpoints/ckpt-{EPOCHS * steps}.data-00000-of-00001",
        f"{prefix}checkpoints/ckpt-{EPOCHS * steps}.index",
    ]
    assert f"{prefix}export/1/{saved_models.SAVED_MODEL_FILE}" in final
    assert {f"{prefix}report.html", f"{prefix}blessing.json"} <= set(final)
    assert any(key.startswith(f"{prefix}tensorboard/train/events.out") for key in final)
    history = list(csv.DictReader(io.StringIO(read_key(s3, f"{prefix}{run_layout.HISTORY}"))))
    assert [row["epoch"] for row in history] == ["0", "1"]
    record = json.loads(read_key(s3, f"{prefix}run.json"))
    assert (record["status"], record["attempts"]) == ("completed", 2)
    # The staging copy mirrors the bucket file for file.
    local = sorted(
        f"{prefix}{p.relative_to(result.run_dir).as_posix()}"
        for p in result.run_dir.rglob("*")
        if p.is_file()
    )
    assert local == final


def test_mirror_syncs_a_run_folder_with_gcs(gcs_endpoint):
    options = {"endpoint_url": gcs_endpoint, "token": "anon"}
    first = mirror.RunMirror(f"gs://{test_gcs.BUCKET}/runs", options)
    run_dir = first.pull("gcs-run") / "gcs-run"
    assert not any(run_dir.rglob("*"))
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-1.index").write_text("one")
    (run_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (run_dir / run_layout.HISTORY).write_text("epoch\n0\n")
    assert first.push() == 3
    assert first.push() == 0  # nothing changed
    (run_dir / "checkpoints" / "ckpt-1.index").unlink()
    (run_dir / "checkpoints" / "ckpt-2.index").write_text("two")
    assert first.push() == 2

    second = mirror.RunMirror(f"gs://{test_gcs.BUCKET}/runs", options)
    pulled = second.pull("gcs-run") / "gcs-run"
    assert pulled != run_dir
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()) == [
        "checkpoints/checkpoint",
        "checkpoints/ckpt-2.index",
        run_layout.HISTORY,
    ]
    assert (pulled / "checkpoints" / "ckpt-2.index").read_text() == "two"


@pytest.mark.parametrize(
    ("path", "remote"),
    [("s3://b/runs", True), ("gs://b/runs", True), ("runs", False), ("file:///tmp/r", False)],
)
def test_a_url_is_remote_and_a_local_or_file_path_is_not(path, remote):
    assert locations.is_url(path) is remote


def test_a_bucket_that_cannot_be_written_is_one_line_naming_the_run_folder(bucket_env):
    """A missing bucket (or wrong credentials or endpoint) stops the run with a MirrorError,
    which `imgclf train` prints as one `error:` line, not the storage client's traceback."""
    run_mirror = mirror.RunMirror("s3://no-such-bucket/runs")
    staging = run_mirror.pull("lost")
    (staging / "lost").mkdir()
    (staging / "lost" / "history.csv").write_text("epoch\n0\n")

    with pytest.raises(mirror.MirrorError) as raised:
        run_mirror.push()

    message = str(raised.value)
    assert message.startswith("could not write s3://no-such-bucket/runs/lost (")
    assert "NoSuchBucket" in message or "does not exist" in message, message
    assert "check train.runs_dir and the credentials" in message
