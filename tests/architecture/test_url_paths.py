"""Dataset locations that may be bucket URLs never go through pathlib: a test that parses every
module and fails where one does.

`Path("gs://b/tfr")` is `gs:/b/tfr`, and `os.path.abspath` or `normpath` do the same, so a
dataset in a bucket became a local folder named `gs:` (the shards were then "not found"). A
location here is data.output_dir (`<anything>.output_dir` not called), an ExampleGen artifact's
URI (`examples.uri`), and, in modules that read dataset versions (those importing
transforms.dataset, dataset_info, dataset_store or the ingest job, and those modules themselves),
any variable named like one (`output_dir`, `out_root`, `version_dir`, `location`). Join them with
os.path.join or f-strings, and read files through transforms/dataset_store.local_copy.
"""

import ast
from pathlib import Path

from tests.architecture import test_import_floors

# Calls that rewrite `scheme://` into `scheme:/` (or prepend the working directory).
PATH_BUILDERS = {"Path", "PurePath", "PosixPath", "abspath", "normpath", "realpath"}
LOCATION_NAMES = {"output_dir", "out_root", "version_dir", "location"}
DATASET_MODULES = {
    "transforms.dataset",
    "transforms.dataset_info",
    "transforms.dataset_store",
    "transforms.beam.ingest",
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(test_import_floors.REPO).with_suffix("").parts)


def reads_datasets(path: Path, tree: ast.AST) -> bool:
    """Whether the module is, or imports, one of DATASET_MODULES."""
    if module_name(path) in DATASET_MODULES:
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        else:
            continue
        if names & DATASET_MODULES:
            return True
    return False


def called_functions(tree: ast.AST) -> set[int]:
    return {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}


def location_in(node: ast.AST, names: set[str], called: set[int]) -> str | None:
    """The first part of expression `node` that may be a bucket URL, as source text."""
    for part in ast.walk(node):
        if isinstance(part, ast.Name) and part.id in names:
            return part.id
        if isinstance(part, ast.Attribute) and id(part) not in called:
            if part.attr == "output_dir":
                return ast.unparse(part)
            if part.attr == "uri" and "examples" in ast.unparse(part.value):
                return ast.unparse(part)
    return None


def path_built_from_a_location(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = LOCATION_NAMES if reads_datasets(path, tree) else set()
    called = called_functions(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
        if name not in PATH_BUILDERS:
            continue
        for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
            location = location_in(argument, names, called)
            if location is not None:
                relative = path.relative_to(test_import_floors.REPO)
                found.append(f"{relative}:{node.lineno}: {ast.unparse(node)} ({location})")
    return found


def test_no_dataset_location_goes_through_pathlib():
    found = [
        line for path in test_import_floors.modules() for line in path_built_from_a_location(path)
    ]
    assert not found, "a location that may be a URL goes through pathlib:\n" + "\n".join(found)


def test_the_check_finds_the_sites_that_lost_gs(tmp_path, monkeypatch):
    """Shard paths, the ingest result's path and the pinned config's output_dir once made
    `gs://b/tfr` into `gs:/b/tfr`; a component's own output folder is a local Path."""
    monkeypatch.setattr(test_import_floors, "REPO", tmp_path)
    (tmp_path / "transforms" / "beam").mkdir(parents=True)
    sites = {
        "transforms/dataset.py": "files = glob(str(Path(version_dir) / pattern(split)))\n",
        "transforms/beam/ingest.py": "result = IngestResult(path=Path(version_dir))\n",
        "config_pinning.py": "cfg.data.output_dir = str(Path(examples.uri).parent)\n",
        "anywhere.py": "root = os.path.abspath(cfg.data.output_dir)\n",
        "component.py": "out = Path(ctx.output_dir('Tuner')) / Path(location)\n",
    }
    for name, code in sites.items():
        (tmp_path / name).write_text(code)

    found = {name: path_built_from_a_location(tmp_path / name) for name in sites}

    assert found == {
        "transforms/dataset.py": ["transforms/dataset.py:1: Path(version_dir) (version_dir)"],
        "transforms/beam/ingest.py": [
            "transforms/beam/ingest.py:1: Path(version_dir) (version_dir)"
        ],
        "config_pinning.py": ["config_pinning.py:1: Path(examples.uri) (examples.uri)"],
        "anywhere.py": [
            "anywhere.py:1: os.path.abspath(cfg.data.output_dir) (cfg.data.output_dir)"
        ],
        # Not a module that reads datasets: `location` may be anything there.
        "component.py": [],
    }
