"""docs/configuration.md is the schema's reference as configs/reference.py writes it: every key of
the config with its type, default and description, and never stale."""

from configs import reference, schema


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a dumped config; an empty mapping (`data.storage_options: {}`) is a leaf."""
    keys = []
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            keys.extend(leaf_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_the_page_is_what_the_schema_generates():
    page = reference.PAGE.read_text(encoding="utf-8")

    assert page == reference.render(), (
        f"docs/configuration.md is stale: regenerate it with `{reference.COMMAND}` "
        "(or `make config-reference`)"
    )


def test_every_key_of_the_config_has_a_row():
    page = reference.render()
    keys = leaf_keys(schema.Config().model_dump())

    assert len(keys) > 150
    missing = [key for key in keys if f"| `{key}` |" not in page]
    assert not missing, f"keys without a row in the reference: {missing}"


def test_a_row_shows_type_bounds_default_and_description():
    page = reference.render()

    assert (
        "| `data.batch_size` | int, > 0 | `64` | Global batch size. |" in page
        and "| `data.resize` | `crop` or `stretch` | `crop` |" in page
        and "| `evaluation.gate.min_accuracy` | (float, ≥ 0, ≤ 1) or null | `null` |" in page
    )
    # Keys inside unions, mappings and layer lists get tables of their own.
    for heading in ("`train.class_weights`", "`tuning.space.<name>`", "`model.cnn` layers"):
        assert f"### {heading}\n" in page
    assert "| `conv.filters` | int, > 0 | required | Number of output channels. |" in page


def test_check_fails_on_a_stale_page_and_names_the_command(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.render().replace("Global batch size.", "Batch size."))

    assert reference.main(["--check", str(stale)]) == 1
    assert reference.COMMAND in capsys.readouterr().err

    reference.main(["--out", str(stale)])
    assert reference.main(["--check", str(stale)]) == 0
