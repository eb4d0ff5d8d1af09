"""data.output_dir in a bucket, end to end, against a real moto S3 server and a real GCS emulator:
ingest publishes to the bucket, training, evaluation, `imgclf data stats` and a pipeline run read
the version from its local cached copy, and the bucket URL stays the version's recorded location."""

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
from configs import loader
from tests.tfx_pipeline import test_pipeline
from tests.transforms.sources import conftest as source_fixtures
from tests.transforms.sources import test_gcs
from tfx_pipeline import flow, metadata
from transforms import dataset_card, dataset_info, dataset_store, near_duplicates
from transforms.beam import ingest

pytestmark = [pytest.mark.slow, pytest.mark.beam]

s3_endpoint = source_fixtures.s3_endpoint  # a real moto S3 server, shared with the source tests
s3_client = source_fixtures.s3_client
gcs_endpoint = test_gcs.gcs_endpoint
S3_BUCKET = "imgclf-datasets"


@dataclass
class Bucket:
    """A folder of a real bucket for data.output_dir, the settings that reach it, and a client."""

    url: str
    overrides: list[str]
    fs: object  # an fsspec filesystem on the same server

    def keys(self) -> list[str]:
        root = self.url.split("://", 1)[1]
        self.fs.invalidate_cache()
        return sorted(path[len(root) + 1 :] for path in self.fs.find(root))


@pytest.fixture(autouse=True)
def cache_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv(dataset_store.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(params=["s3", "gs"])
def bucket(request, tmp_path, monkeypatch) -> Bucket:
    """A fresh folder in S3 (endpoint from AWS_ENDPOINT_URL, as for any AWS client) or in GCS
    (endpoint in data.storage_options, keyed by protocol as for sources)."""
    folder = f"tfrecords-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        import s3fs

        endpoint = request.getfixturevalue("s3_endpoint")
        client = request.getfixturevalue("s3_client")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        client.create_bucket(Bucket=S3_BUCKET)
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        return Bucket(f"s3://{S3_BUCKET}/{folder}", [], fs)
    import gcsfs

    endpoint = request.getfixturevalue("gcs_endpoint")
    options = f"data.storage_options={{gs: {{endpoint_url: {endpoint}, token: anon}}}}"
    fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
    return Bucket(f"gs://{test_gcs.BUCKET}/{folder}", [options], fs)


def bucket_overrides(tmp_path: Path, make_tree, bucket: Bucket) -> list[str]:
    """test_pipeline's learnable 2-class dataset and 3-epoch run, the dataset in `bucket`."""
    return [
        *test_pipeline.tiny_overrides(tmp_path, make_tree),
        f"data.output_dir={bucket.url}",
        *bucket.overrides,
    ]


def test_ingest_train_and_evaluate_through_a_bucket(tmp_path, make_tree, bucket, capsys):
    cfg = loader.load(None, bucket_overrides(tmp_path, make_tree, bucket))

    result = ingest.run(cfg.data)

    version = result.version
    assert result.location == f"{bucket.url}/{version}"
    shards = [name for s in result.dataset["splits"].values() for name in s["shards"]]
    expected = [
        dataset_info.DATASET_JSON,
        dataset_info.QUARANTINE_JSONL,
        near_duplicates.NEAR_DUPLICATES_JSONL,
        dataset_card.CARD_MD,
    ]
    expected += shards
    assert bucket.keys() == sorted([dataset_info.LATEST, *(f"{version}/{n}" for n in expected)])
    assert bucket.fs.cat_file(f"{bucket.url}/{dataset_info.LATEST}").decode().strip() == version
    # What ingest uploaded stays as the cached copy: training downloads nothing.
    assert result.path == Path(dataset_store.cache_dir(result.location))
    assert sorted(p.name for p in result.path.iterdir()) == sorted(expected)
    local = ingest.run(cfg.data.model_copy(update={"output_dir": str(tmp_path / "local")}))
    assert local.version == version  # the bucket holds what a local ingest writes

    trained = flow.run(cfg)

    assert trained.training["dataset_version"] == version
    # The shards were found: 2 classes, and all 12 test images are learnable (test_pipeline).
    assert trained.metrics["accuracy"] > 0.5
    assert trained.metrics["test_data"] == result.location
    assert "fetched" not in capsys.readouterr().out

    # `imgclf evaluate` of the export (with the model's own config) finds its dataset in the
    # bucket, and records the bucket URL as what it was evaluated on.
    out = tmp_path / "evaluation"
    assert cli.main(["evaluate", "--model-path", str(trained.export_dir), "--out", str(out)]) == 0
    assert f"dataset {version} test" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["test_data"] == result.location

    png = tmp_path / "counts.png"
    stats = ["data", "stats", result.location, "--png", str(png), *sets(bucket.overrides)]
    assert cli.main(stats) == 0 and png.is_file()
    assert f"dataset {version} ({result.location})" in capsys.readouterr().out


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def test_a_version_is_downloaded_once_and_an_incomplete_one_never_read(
    tmp_path, make_tree, bucket, monkeypatch
):
    cfg = loader.load(None, bucket_overrides(tmp_path, make_tree, bucket))
    result = ingest.run(cfg.data)
    # Another machine: an empty cache.
    monkeypatch.setenv(dataset_store.CACHE_ENV, str(tmp_path / "other-cache"))
    assert dataset_store.cached_copy(result.location) is None

    first = Path(dataset_store.local_version_dir(cfg.data))

    assert first == Path(dataset_store.cache_dir(result.location))
    assert dataset_info.load(str(first)) == result.dataset
    assert not [p for p in first.parent.iterdir() if dataset_store.PARTIAL in p.name]
    inodes = {p.name: p.stat().st_ino for p in first.iterdir()}
    # With the version gone from the bucket, only the cached copy can still be read: any
    # request for it would fail.
    bucket.fs.rm(result.location, recursive=True)

    again = Path(dataset_store.local_copy(result.location, cfg.data))

    assert again == first
    assert {p.name: p.stat().st_ino for p in again.iterdir()} == inodes
    assert dataset_info.example_index(str(again))  # the shards are all there

    # An interrupted upload: shards without dataset.json, and `latest` naming it.
    incomplete = "0123456789abcdef"
    shard = result.dataset["splits"]["test"]["shards"][0]
    bucket.fs.put_file(str(first / shard), f"{bucket.url}/{incomplete}/{shard}")
    bucket.fs.pipe_file(f"{bucket.url}/{dataset_info.LATEST}", f"{incomplete}\n".encode())
    with pytest.raises(dataset_info.DatasetNotFound, match=f"version {incomplete} not found"):
        dataset_store.local_version_dir(cfg.data)
    with pytest.raises(dataset_info.DatasetNotFound, match="upload was interrupted"):
        dataset_store.local_copy(f"{bucket.url}/{incomplete}", cfg.data)
    assert not any(incomplete in p.name for p in first.parent.iterdir())


def test_a_pipeline_run_with_its_dataset_in_a_bucket(tmp_path, make_tree, bucket):
    overrides = [
        *bucket_overrides(tmp_path, make_tree, bucket),
        "pipeline.infra_validation.enabled=false",
    ]

    summary = test_pipeline.run(overrides)

    assert set(test_pipeline.statuses(summary).values()) <= {metadata.COMPLETED, metadata.SKIPPED}
    examples = summary.outputs["ExampleGen.examples"]
    version = examples.properties["version"]
    assert examples.uri == f"{bucket.url}/{version}"
    assert f"{version}/{dataset_info.DATASET_JSON}" in bucket.keys()
    statistics = summary.outputs["StatisticsGen.statistics"]
    assert json.loads(Path(statistics.uri).read_text())["version"] == version
    model = summary.outputs["Trainer.model"]
    assert model.properties["dataset_version"] == version
    evaluation = summary.outputs["Evaluator.evaluation"]
    assert evaluation.properties["accuracy"] > 0.5
    assert summary.outputs["Pusher.pushed_model"].properties["pushed"] is True
