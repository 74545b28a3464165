"""docs/settings.md is generated from the schema dataclasses; it must say what the schemas say."""

from __future__ import annotations

import dataclasses

from ftexp.config import reference
from ftexp.config.schema import SCHEMAS, Config, EwcConfig, TrainerConfig
from tests.helpers import REPO

SETTINGS = REPO / "docs" / "settings.md"


def test_settings_page_is_up_to_date():
    assert SETTINGS.is_file(), f"docs/settings.md is missing: run `{reference.COMMAND}`"
    assert SETTINGS.read_text() == reference.render(), (
        f"docs/settings.md is out of date with the schemas: run `{reference.COMMAND}` and commit the result")


def test_every_schema_key_is_on_the_page():
    text = reference.render()
    for f in dataclasses.fields(Config):
        assert f"| `{f.name}` |" in text
    for group, options in SCHEMAS.items():
        assert f"\n## {group}\n" in text
        for name, cls in options.items():
            template = reference.PREFIX.get(group, group)
            for f in dataclasses.fields(cls):
                keys = [f"`{template.format(option=o)}.{f.name}`" for o in (name, "<option>")]
                assert any(key in text for key in keys), (group, name, f.name)


def test_comments_come_from_the_schema_source():
    # a trailing comment, a block comment above the field, a keyword key, a nested schema and a base-class comment
    assert reference.comment(TrainerConfig, "max_steps") == "per stage; -1 = no limit"
    assert reference.comment(TrainerConfig, "packing").startswith("Pack each training step's examples")
    assert reference.comment(EwcConfig, "lambda").startswith("penalty weight")
    text = reference.render()
    assert "| `trainer.fsdp.sharding_strategy` | str | `FULL_SHARD` |" in text
    assert "| `mitigation.lambda` | float | `1000.0` |" in text
    assert "| `evaluator.efficiency.rows` | str | `last` | all: row 0" in text
    assert "\\|" in text  # a | inside a comment does not break the table


def test_type_and_default_texts():
    assert reference.type_name("Optional[List[str]]") == "list[str] or null"
    assert reference.type_name("Dict[str, Any]") == "dict[str, any]"
    assert reference.default_text("${model.lr}") == "`${model.lr}`"
    assert reference.default_text("Q: {question}\nA:") == '`"Q: {question}\\nA:"`'
    assert reference.default_text(None) == "`null`"


def test_writes_to_a_path(tmp_path):
    out = tmp_path / "settings.md"
    assert reference.main([str(out)]) == 0
    assert out.read_text() == reference.render()
