"""Commands given a bucket URL where they need a local folder answer one line naming the URL and
what to do, instead of treating `s3://b/x` as the local path `s3:/b/x`."""

import pytest

import cli

MODEL_URL = "s3://bucket/store/digits"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["serve", "--model-path", MODEL_URL], f"model path {MODEL_URL} is a URL; imgclf loads"),
        (["predict", "--model-path", MODEL_URL, "cat.png"], f"model path {MODEL_URL} is a URL"),
        (
            ["evaluate", "--model-path", MODEL_URL, "--test-data", "data/digits"],
            f"{MODEL_URL} is a URL; give a local (or mounted) run or export folder",
        ),
        (
            ["registry", "push", MODEL_URL, "--model", "digits"],
            f"{MODEL_URL} is a URL; give a local (or mounted) run or export folder",
        ),
        (
            ["runs", "list", "--runs-dir", "gs://bucket/runs"],
            "runs folder gs://bucket/runs is a bucket; `imgclf runs` reads local folders",
        ),
    ],
    ids=["serve", "predict", "evaluate", "registry push", "runs list"],
)
def test_a_url_for_a_local_folder_is_one_error_line(
    arguments, expected, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(arguments) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {expected}"), line
    assert list(tmp_path.iterdir()) == []  # no folder named `s3:` or `gs:`
