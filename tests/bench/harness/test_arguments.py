"""bench/harness/arguments.py: a sized setting is what the command line gives, else its --quick
value under --quick, else its full value; a subset names only known things."""

import pytest


@pytest.fixture(scope="module")
def arguments(bench_import):
    return bench_import("harness.arguments")


@pytest.fixture
def options(arguments):
    options = arguments.Options("a benchmark", "a smoke run")
    options.add_sized("--requests", 2000, 40, "most requests per cell", type=int)
    options.add_sized("--sizes", [10_000, 100_000], [500, 2000], "images", type=int, nargs="+")
    options.add("--image-size", default="320x240")
    return options


def test_sized_settings_take_their_full_or_quick_value_unless_given(options):
    full = options.parse([])
    assert (full.quick, full.requests, full.sizes, full.image_size) == (
        False,
        2000,
        [10_000, 100_000],
        "320x240",
    )
    quick = options.parse(["--quick"])
    assert (quick.quick, quick.requests, quick.sizes) == (True, 40, [500, 2000])
    assert options.parse(["--quick", "--requests", "7"]).requests == 7
    assert options.parse(["--sizes", "3", "4"]).sizes == [3, 4]


def test_help_shows_both_values(options, capsys):
    with pytest.raises(SystemExit):
        options.parse(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "most requests per cell (default 2000; --quick 40)" in shown
    assert "images (default 10000 100000; --quick 500 2000)" in shown


def test_a_subset_keeps_its_order_and_rejects_unknown_names(arguments, options, capsys):
    known = ["serving", "input", "training"]
    assert arguments.subset(options.parser, None, known, "benchmark") == known
    assert arguments.subset(options.parser, "training,serving", known, "benchmark") == [
        "training",
        "serving",
    ]
    with pytest.raises(SystemExit) as exited:
        arguments.subset(options.parser, "serving,gpu,tpu", known, "benchmark")
    assert exited.value.code == 2
    assert "unknown benchmark(s) gpu, tpu; known: serving, input, training" in (
        capsys.readouterr().err
    )
